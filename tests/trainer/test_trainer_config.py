"""Bad configs: one clear line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from trainer_testlib import REPO, subprocess_env, tiny_config, write_config

from trainer.__main__ import main
from trainer.args import parse_config


def run_main(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learnig_rate": 1e-3}, "unknown config key learnig_rate"),
        ({"max_steps": "many"}, "config key max_steps must be an integer"),
        ({"learning_rate": "fast"}, "config key learning_rate must be a number"),
        ({"pad_to_max_length": "yes"}, "config key pad_to_max_length must be true or false"),
        ({"self_condition": "logits_sum"}, "config key self_condition must be one of"),
        ({"conditional_generation": "t5"}, "config key conditional_generation must be one of"),
        ({"train_file": "no/such/train.txt"}, "train_file not found: no/such/train.txt"),
        ({"train_file": None}, "config has no train_file"),
        ({"backup_keep_last": 0}, "config key backup_keep_last must be at least 1"),
        ({"syncd_intervall_seconds": 5}, "unknown config key syncd_intervall_seconds"),
        ({"eval_strategy": "sometimes"}, "invalid training arguments"),
        ({"output_dir": None}, "has no output_dir"),
        ({"simplex_value": 0}, "config key simplex_value must be positive"),
        ({"num_inference_diffusion_steps": 0}, "config key num_inference_diffusion_steps must be at least 1"),
        ({"model_config": {"hidden_sise": 8}}, "unknown model_config key hidden_sise"),
    ],
    ids=["unknown-key", "int-type", "float-type", "bool-type", "self-condition", "conditional", "missing-train",
         "no-train", "syncd-value", "syncd-unknown", "hf-enum", "no-output-dir", "simplex-value", "inference-steps",
         "model-config-key"],
)
def test_bad_config_is_one_clear_line(tmp_path, capsys, overrides, message):
    cfg = write_config(tmp_path, **overrides)
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tess-train: error: ") and message in lines[0], err


def test_missing_and_malformed_config_files(tmp_path, capsys):
    code, err = run_main(capsys, [str(tmp_path / "nope.json")])
    assert code == 2 and "config file not found" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    code, err = run_main(capsys, [str(bad)])
    assert code == 2 and "is not valid JSON" in err
    code, err = run_main(capsys, [])
    assert code == 2 and "usage: python -m trainer CONFIG.json" in err


def test_bad_override_value_is_reported(tmp_path, capsys):
    cfg = write_config(tmp_path)
    code, err = run_main(capsys, [str(cfg), "--max_steps", "ten"])
    assert code == 2 and "config key max_steps must be an integer, not 'ten'" in err


def test_real_process_exits_2_without_traceback(tmp_path):
    cfg = write_config(tmp_path, bogus_key=1)
    p = subprocess.run([sys.executable, "-m", "trainer", str(cfg)], cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "tess-train: error: unknown config key bogus_key"


def test_renamed_key_is_accepted_with_a_warning(tmp_path, caplog):
    cfg = tiny_config(tmp_path)
    del cfg["eval_strategy"]
    cfg["evaluation_strategy"] = "steps"
    cfg["eval_steps"] = 5
    path = tmp_path / "old.json"
    path.write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING, logger="tessync.trainer"):
        parsed = parse_config([str(path)])
    assert parsed.training.eval_strategy == "steps"
    assert any("evaluation_strategy was renamed eval_strategy" in r.getMessage() for r in caplog.records)


def test_config_routes_every_key(tmp_path):
    cfg = write_config(tmp_path, gdrive_backup_dir=str(tmp_path / "remote"), backup_keep_last=2,
                       syncd_interval_seconds=1, time_save_interval_seconds=7)
    parsed = parse_config([str(cfg), "--simplex_value", "4", "--max_steps", "12", "--resume_from_checkpoint",
                           "false"])
    assert parsed.diffusion.simplex_value == 4.0 and isinstance(parsed.diffusion.simplex_value, float)
    assert parsed.training.max_steps == 12
    assert parsed.run.resume_from_checkpoint is False
    assert parsed.run.time_save_interval_seconds == 7.0
    assert parsed.sync.remote_url == str((tmp_path / "remote").resolve())
    assert parsed.sync.backup_keep_last == 2 and parsed.sync.run_name == "tiny"
    assert parsed.data.conditional_generation == "kg_quad"
    assert parsed.model.model_config["hidden_size"] == 32


@pytest.mark.parametrize("name", ["tess_tiny_cpu.json", "tess_gpu_oneline_sc.json"])
def test_shipped_configs_parse(name, monkeypatch):
    monkeypatch.chdir(REPO)
    parsed = parse_config([str(REPO / "configs" / name)])
    assert parsed.run.time_save_interval_seconds and parsed.sync.remote_url
    assert json.loads((REPO / "configs" / name).read_text())["_comment"].count("configs/" + name) >= 1
