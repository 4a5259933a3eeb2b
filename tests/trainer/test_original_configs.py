"""The original TESS's configs run here unchanged (issue 9, item 1).

The fixtures in tests/fixtures/tess_original/ are the fork's
configs/tess_gpu_oneline_sc.json (prettyidol/tess-diffusion) and the original's
configs/simple_data_test.json (allenai/tess-diffusion 63f039b), byte for byte.
Every key is honoured, accepted with one start-up line, or refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from trainer_testlib import (
    REPO,
    commit_to_remote,
    fake_checkpoint,
    read_losses,
    tiny_config,
    write_config,
)

from syncd.errors import ConfigError
from trainer import compat
from trainer.__main__ import main
from trainer.args import parse_config

FIXTURES = REPO / "tests" / "fixtures" / "tess_original"
FORK_CONFIG = FIXTURES / "fork_tess_gpu_oneline_sc.json"
ALLENAI_CONFIG = FIXTURES / "allenai_simple_data_test.json"
TINY_MODEL = json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 66})


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_fixtures_are_the_published_bytes():
    # The blob ids of the files at the commits named in NOTICE.md.
    assert git_blob(FORK_CONFIG) == "b9730f4f3f0a834a04e8fbf43a898970804769e4"
    assert git_blob(ALLENAI_CONFIG) == "d871d2d929c5a774718142bf1183803efeaf1f59"
    notice = (FIXTURES / "NOTICE.md").read_text()
    assert "Apache License, Version 2.0" in notice and "63f039b24fd4dbf3b2d4d5b1ba67bf71194757a9" in notice


def parse_logged(caplog, path, *args):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tessync.trainer"):
        cfg = parse_config([str(path), *args])
    return cfg, [r.getMessage() for r in caplog.records]


def get(cfg, dotted):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def value(cfg, key):
    """A key's parsed value: ours where implemented, else the original's stand-in."""
    return getattr(cfg.diffusion, key) if compat.implemented(cfg, key) else getattr(cfg.original, key)


# key, value given, (attribute, value parsed), the start-up line (None: honoured silently).
ACCEPTED = [
    ("overwrite_output_dir", True, ("original.overwrite_output_dir", True),
     "overwrite_output_dir true: a fresh start only where"),
    ("beta_schedule", "squaredcos_improved_ddpm", ("diffusion.beta_schedule", "squaredcos_improved_ddpm"), None),
    ("clip_sample", True, ("diffusion.clip_sample", True), None),
    ("skip_special_tokens", False, ("original.skip_special_tokens", False), "skip_special_tokens false"),
    ("without_compute_metrics", True, ("original.without_compute_metrics", True),
     "without_compute_metrics true: no generation metrics"),
    ("line_by_line", True, ("data.line_by_line", True), None),
    ("pad_to_max_length", True, ("data.pad_to_max_length", True), None),
    ("do_train", True, ("training.do_train", True), None),
    ("do_eval", True, ("original.final_evaluation", True), "do_eval true: the model is evaluated"),
    ("report_to", ["tensorboard"], ("training.report_to", ["tensorboard"]), None),
    ("conditional_generation", None, ("data.conditional_generation", None),
     "nearest mode here is conditional_generation kg_quad"),
    ("max_train_steps", 12, ("training.max_steps", 12), "max_train_steps (the name in the original TESS's"),
    ("num_warmup_steps", 3, ("training.warmup_steps", 3), "read as warmup_steps"),
    ("checkpointing_steps", 4, ("training.save_steps", 4), "read as save_steps"),
    ("split_glue", False, ("original.split_glue", False), "only the original's run_glue.py reads it"),
    ("max_target_length", 64, ("original.max_target_length", 64), "only the original's seq2seq scripts"),
    ("model_type", "bert", ("original.model_type", "bert"), "always builds RoBERTa"),
    ("validation_split_ratio", 0.1, ("original.validation_split_ratio", 0.1), "split commented out"),
    ("ssdlm_optimizer", True, ("original.ssdlm_optimizer", True), "SSD-LM's AdamW"),
    ("log_generated_texts", False, ("original.log_generated_texts", False), "out of tensorboard"),
    ("compute_eval_loss_with_simplex", True, ("original.compute_eval_loss_with_simplex", True),
     "scores the sampled simplex"),
    ("eval_for_all_metrics", True, ("original.eval_for_all_metrics", True), "MAUVE"),
    ("use_auth_token", True, ("original.use_auth_token", True), "sends the saved Hugging Face token"),
    ("use_fast_tokenizer", False, ("original.use_fast_tokenizer", False), "one tokenizer class per model"),
    ("load_states_in_eval_from_model_path", True, ("original.load_states_in_eval_from_model_path", True),
     "evaluation uses the model being trained"),
    ("fp16", True, ("training.fp16", True), "fp16 true without a CUDA device"),
    ("extra_padding_ratio", 0.0, ("original.extra_padding_ratio", 0.0), None),
    ("mixed_pretrain_objectives", False, ("original.mixed_pretrain_objectives", False), None),
    ("deepmind_conditional", False, ("original.deepmind_conditional", False), None),
    ("resume_from_checkpoint", None, ("run.resume_from_checkpoint", "auto"), "resume_from_checkpoint null: the "
                                                                           "original resumes from the newest"),
    ("sortish_sampler", True, ("original.sortish_sampler", True), "only the original's seq2seq scripts"),
    ("max_seq_length", None, ("data.max_seq_length", 512), "max_seq_length null: the original takes the "
                                                           "tokenizer's limit, 512 for RoBERTa"),
]


@pytest.mark.parametrize("key, value, parsed, line", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_original_key_is_accepted(tmp_path, caplog, key, value, parsed, line):
    raw = tiny_config(tmp_path, **{key: value})
    raw.pop(compat.LEGACY_NAMES.get(key, ""), None)  # max_train_steps stands for max_steps, not beside it
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    cfg, messages = parse_logged(caplog, path)
    if key in compat.STAND_INS and not compat.implemented(cfg, key):
        # The model/sampling work has not landed in this build: accepted, and said so.
        assert getattr(cfg.original, key) == parsed[1]
        assert any(f"config key {key}" in m and "not implemented" in m for m in messages) or \
            parsed[1] == compat.ORIGINAL_FIELDS[key].default, messages
        return
    assert get(cfg, parsed[0]) == parsed[1]
    notes = [m for m in messages if key in m or (line and line in m)]
    if line is None:
        assert not notes, messages
    else:
        assert len([m for m in messages if line in m]) == 1, messages


def ours(cfg, key):
    for part in (cfg.model, cfg.data, cfg.diffusion, cfg.run):
        if hasattr(part, key):
            return getattr(part, key)
    raise AttributeError(key)


def test_the_original_metric_switches_map_onto_ours(tmp_path, caplog, capsys):
    if not compat.implemented(parse_config([str(write_config(tmp_path))]), "eval_text_metrics"):
        pytest.fail("this build has no eval_text_metrics")
    cfg, messages = parse_logged(caplog, write_config(tmp_path, without_compute_metrics=False,
                                                      autoregressive_eval_model="gpt2"))
    assert ours(cfg, "eval_text_metrics") is True and ours(cfg, "eval_perplexity_model") == "gpt2"
    assert sum("read as eval_perplexity_model" in m for m in messages) == 1
    cfg, messages = parse_logged(caplog, write_config(tmp_path, without_compute_metrics=True,
                                                      autoregressive_eval_model="gpt2"))
    assert ours(cfg, "eval_text_metrics") is False and ours(cfg, "eval_perplexity_model") is None
    cfg, messages = parse_logged(caplog, write_config(tmp_path, split_glue=True))  # an original-style config
    assert ours(cfg, "eval_text_metrics") is False
    assert any("without_compute_metrics not given" in m for m in messages)
    code = main([str(write_config(tmp_path, without_compute_metrics=True, eval_text_metrics=True))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "without_compute_metrics true turns the generation metrics off" in err[-1]


def test_config_overrides_becomes_model_config(tmp_path):
    path = write_config(tmp_path, config_overrides="type_vocab_size=2,hidden_dropout_prob=0.0")
    cfg = parse_config([str(path)])
    assert cfg.model.model_config["type_vocab_size"] == 2 and cfg.model.model_config["hidden_dropout_prob"] == 0.0
    assert cfg.model.model_config["hidden_size"] == 32


REFUSED = [
    ({"tokenized_data_path": "processed/"}, "config key tokenized_data_path is not supported"),
    ({"dataset_name": "openwebtext"}, "config key dataset_name is not supported"),
    ({"extra_padding_ratio": 0.1}, "config key extra_padding_ratio is not supported"),
    ({"conditional_generation": "ul2"}, "conditional_generation ul2 (a per-batch mix"),
    ({"mixed_pretrain_objectives": True}, "config key mixed_pretrain_objectives (the original's earlier name"),
    ({"deepmind_conditional": True}, "config key deepmind_conditional is not supported"),
    ({"do_train": False}, "config key do_train false (evaluation only) is not supported"),
    ({"do_eval": True, "validation_file": None}, "config key do_eval true needs a validation_file"),
    ({"output_dir": "%TESS_TEST_UNSET%/run"}, "config key output_dir uses %TESS_TEST_UNSET% but the environment "
                                              "variable TESS_TEST_UNSET is not set"),
    ({"train_file": "${TESS_TEST_UNSET}/train.txt"}, "config key train_file uses ${TESS_TEST_UNSET}"),
    ({"config_overrides": "num_hidden_layers=2", "model_name_or_path": "roberta-base"},
     "config_overrides can't be used in combination with model_name_or_path"),
    ({"max_train_steps": 5, "max_steps": 6}, "config has both max_train_steps and max_steps"),
    ({"config_overrides": "num_hidden_layers=2"}, "config_overrides sets num_hidden_layers to 2 but model_config "
                                                  "says 1"),
]


@pytest.mark.parametrize("overrides, message", REFUSED, ids=[next(iter(o)) + "-" + str(i) for i, (o, _) in
                                                              enumerate(REFUSED)])
def test_unsupported_original_key_is_one_line(tmp_path, capsys, monkeypatch, overrides, message):
    monkeypatch.delenv("TESS_TEST_UNSET", raising=False)
    code = main([str(write_config(tmp_path, **overrides))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("tess-train: error: ") and message in lines[-1], lines
    assert not any("Traceback" in line for line in lines)


def test_paths_expand_as_the_fork_does(tmp_path, monkeypatch):
    monkeypatch.setenv("GDRIVE", str(tmp_path / "drive"))
    monkeypatch.setenv("DATA_DIR", str(REPO / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config(tmp_path, output_dir="%GDRIVE%/tess", gdrive_backup_dir="~/backups",
                        train_file="${DATA_DIR}/kg_quads/train.txt", validation_file="$DATA_DIR/kg_quads/validation.txt")
    cfg = parse_config([str(path)])
    assert cfg.training.output_dir == str(tmp_path / "drive" / "tess")
    assert cfg.sync.output_dir == (tmp_path / "drive" / "tess").resolve()
    assert cfg.sync.remote_url == str((tmp_path / "home" / "backups").resolve())
    assert cfg.data.train_file == str(REPO / "data" / "kg_quads" / "train.txt")
    assert cfg.data.validation_file == str(REPO / "data" / "kg_quads" / "validation.txt")


def test_syncd_reads_the_fork_config_as_the_trainer_does(tmp_path, monkeypatch):
    """One config, two programs: the daemon watches the folder the trainer writes."""
    from syncd.config import load_config

    monkeypatch.delenv("GDRIVE", raising=False)
    with pytest.raises(ConfigError, match=r"config key output_dir uses %GDRIVE% but the environment variable "
                                          r"GDRIVE is not set: export GDRIVE=<folder> first"):
        load_config(FORK_CONFIG)
    monkeypatch.setenv("GDRIVE", str(tmp_path / "drive"))
    sync = load_config(FORK_CONFIG)
    trainer_cfg = parse_config([str(FORK_CONFIG), "--train_file", str(REPO / "data" / "kg_quads" / "train.txt"),
                                "--validation_file", str(REPO / "data" / "kg_quads" / "validation.txt")])
    assert sync.output_dir == trainer_cfg.sync.output_dir == (tmp_path / "drive" / "tess_gpu_oneline_sc").resolve()
    assert Path(trainer_cfg.training.output_dir).resolve() == sync.output_dir
    assert sync.remote_url is None and sync.backup_keep_last == 3 and sync.save_total_limit == 5


def test_the_originals_own_config(tmp_path, monkeypatch, caplog, capsys):
    """allenai's simple_data_test.json: its one unsupported key is named; without it, every key is read."""
    local = tmp_path / "local"
    small = local / "diffusion" / "small_data"
    small.mkdir(parents=True)
    for name in ("simple-train.txt", "simple-test.txt"):
        (small / name).write_text("a short line of text\nanother one\n")
    monkeypatch.setenv("LOCAL_DIR", str(local))
    code = main([str(ALLENAI_CONFIG)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "config key mixed_pretrain_objectives" in err[-1], err
    cfg, messages = parse_logged(caplog, ALLENAI_CONFIG, "--mixed_pretrain_objectives", "false")
    assert cfg.training.output_dir == str(local / "outputs" / "simplex" / "test")
    assert cfg.data.train_file == str(small / "simple-train.txt")
    assert (cfg.training.max_steps, cfg.training.warmup_steps, cfg.training.save_steps) == (10, 2000, 1000)
    assert cfg.training.lr_scheduler_type == "cosine" and cfg.training.learning_rate == 3e-5
    assert value(cfg, "beta_schedule") == "squaredcos_improved_ddpm" and cfg.diffusion.top_p == 0.99
    assert cfg.diffusion.self_condition == "logits_addition" and value(cfg, "guidance_scale") == 1.0
    assert (cfg.data.mask_ratio, cfg.data.max_seq_length, cfg.data.pad_to_max_length) == (0.5, 50, False)
    assert (cfg.diffusion.num_diffusion_steps, cfg.diffusion.num_inference_diffusion_steps) == (2000, 2000)
    assert sum("accelerate-era configs) is read as" in m for m in messages) == 3, messages
    # top_p without sampling_type: the original's default sampling_type top_p, so nucleus sampling.
    assert cfg.diffusion.sampling_type == "top_p"
    assert any("top_p 0.99 without sampling_type" in m for m in messages)
    differ = [m for m in messages if m.startswith("this config leaves out keys whose default here differs")]
    assert len(differ) == 1 and "report_to none (original all)" in differ[0], messages
    assert "num_diffusion_steps" not in differ[0]  # given by the config


# overwrite_output_dir: never train over a run's checkpoints, wherever they are.


def overwrite_cfg(tmp_path, **overrides):
    return parse_config([str(write_config(tmp_path, overwrite_output_dir=True, **overrides))])


def test_overwrite_refuses_local_checkpoints(tmp_path, capsys):
    fake_checkpoint(tmp_path / "out", 10)
    with pytest.raises(ConfigError, match=r"overwrite_output_dir is true but .*out holds checkpoints of this run "
                                          r"\(checkpoint-10\); not training over them"):
        compat.check_overwrite(overwrite_cfg(tmp_path))
    code = main([str(tmp_path / "config.json")])  # the same config, as a run: one line, before step one
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "drop overwrite_output_dir" in err[-1] and "new run_name or output_dir" in err[-1]
    assert not (tmp_path / "out" / "loss_log.jsonl").exists()


def test_overwrite_refuses_remote_only_checkpoints(tmp_path):
    remote = tmp_path / "remote"
    elsewhere = fake_checkpoint(tmp_path / "other-machine", 30)
    commit_to_remote(elsewhere, remote, "tiny")
    cfg = overwrite_cfg(tmp_path, gdrive_backup_dir=str(remote))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"the remote .*remote \(run tiny\) holds checkpoints of this run "
                                          r"\(checkpoint-30\)"):
        compat.check_overwrite(cfg)


def test_overwrite_with_no_checkpoint_anywhere_starts_fresh(tmp_path, caplog):
    remote = tmp_path / "remote"
    commit_to_remote(fake_checkpoint(tmp_path / "other-machine", 30), remote, "another-run")
    cfg = overwrite_cfg(tmp_path, gdrive_backup_dir=str(remote))
    with caplog.at_level(logging.INFO, logger="tessync.trainer"):
        compat.check_overwrite(cfg)
    assert any("no checkpoint of this run" in r.getMessage() and "starting fresh" in r.getMessage()
               for r in caplog.records)


def test_overwrite_follows_an_explicit_resume_setting(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "out", 10)
    compat.check_overwrite(overwrite_cfg(tmp_path, resume_from_checkpoint=False))
    compat.check_overwrite(overwrite_cfg(tmp_path, resume_from_checkpoint=str(ckpt)))


def test_fork_config_trains_and_resumes(tmp_path, procs, capsys, monkeypatch):
    """The fork's config as published, with only the model size and the data overridden.

    320 lines of 64 tokens (padded, as it says) at its batch of 16 are its one epoch of
    20 steps; save_steps 10 (its own is 500) gives a checkpoint to resume from. Its output_dir %GDRIVE%/... comes from the
    environment, its report_to tensorboard writes an event file, its do_eval a final
    evaluation; run again, its overwrite_output_dir refuses to train over the
    checkpoints, and with --overwrite_output_dir false it resumes.
    """
    drive = tmp_path / "drive"
    out = drive / "tess_gpu_oneline_sc"
    base = [str(FORK_CONFIG), "--model_name_or_path", "null", "--tokenizer_name", str(REPO / "data" / "tokenizer"),
            "--model_config", TINY_MODEL, "--cache_dir", str(tmp_path.parent / "hf-cache"),
            "--train_file", str(REPO / "data" / "kg_quads" / "train.txt"),
            "--validation_file", str(REPO / "data" / "kg_quads" / "validation.txt"),
            "--max_train_samples", "320", "--max_eval_samples", "8", "--max_seq_length", "64", "--save_steps", "10",
            "--disable_tqdm", "true"]
    monkeypatch.setenv("GDRIVE", str(drive))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    log1 = tmp_path / "run1.log"
    assert procs.run(base, log1) == 0, log1.read_text()[-3000:]
    losses = read_losses(out)
    assert sorted(losses) == list(range(1, 21))
    assert {p.name for p in out.iterdir() if p.name.startswith("checkpoint-")} == {"checkpoint-10", "checkpoint-20"}
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    text = log1.read_text()
    assert "'eval_loss'" in text and "conditional_generation null" in text

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(base)  # the same command again: stops before step one, nothing touched
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "overwrite_output_dir is true but" in err[-1] and "checkpoint-20" in err[-1], err
    assert sorted(read_losses(out)) == list(range(1, 21))

    log2 = tmp_path / "run2.log"
    tb = tmp_path / "tb"  # the original's logging_dir, a key transformers 5 dropped
    assert procs.run(base + ["--overwrite_output_dir", "false", "--num_train_epochs", "2",
                             "--logging_dir", str(tb)], log2) == 0, log2.read_text()[-3000:]
    assert list(tb.glob("events.out.tfevents.*"))
    assert "checkpoint-20 (newest complete local checkpoint, step 20)" in log2.read_text()
    resumed = read_losses(out)
    assert sorted(resumed) == list(range(1, 41))
    assert all(resumed[s] == losses[s] for s in range(1, 21))  # the first 20 steps were not trained again
