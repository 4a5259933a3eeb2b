"""syncd and the trainer check config values with one checker: same bad value, same line."""

from __future__ import annotations

import json

import pytest
from trainer_testlib import tiny_config

from syncd.config import load_config
from syncd.errors import ConfigError
from trainer.args import parse_config


def _messages(tmp_path, **overrides) -> tuple[str, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_config(tmp_path, **overrides)))
    with pytest.raises(ConfigError) as by_trainer:
        parse_config([str(path)])
    with pytest.raises(ConfigError) as by_syncd:
        load_config(path)
    return str(by_trainer.value), str(by_syncd.value)


@pytest.mark.parametrize(("key", "value"), [
    ("save_total_limit", 0),
    ("save_total_limit", "five"),
    ("backup_keep_last", 2.5),
    ("run_name", ""),
    ("output_dir", ["out"]),
    ("syncd_upload_workers", 10**9),
    ("syncd_delete_mode", "shred"),
    ("syncd_gdrive_chunk_mb", 0.3),
    ("syncd_wait_at_end", "yes"),
])
def test_a_key_both_read_gets_the_same_message_from_both(tmp_path, key, value):
    by_trainer, by_syncd = _messages(tmp_path, **{key: value})
    assert by_trainer == by_syncd
    assert by_syncd.startswith(f"config key {key} must ")


@pytest.mark.parametrize(("syncd_key", "trainer_key", "value"), [
    ("backup_keep_last", "max_steps", "ten"),  # int: syncd's, and a TrainingArguments field
    ("backup_keep_last", "num_diffusion_steps", True),  # int: one of our dataclasses
    ("syncd_interval_seconds", "learning_rate", "fast"),  # float
    ("syncd_interval_seconds", "simplex_value", None),  # float, not nullable
    ("syncd_wait_at_end", "pad_to_max_length", "yes"),  # bool
])
def test_a_bad_value_of_one_type_reads_the_same_in_both_programs(tmp_path, syncd_key, trainer_key, value):
    syncd_cfg = tmp_path / "syncd.json"
    syncd_cfg.write_text(json.dumps(tiny_config(tmp_path, **{syncd_key: value})))
    with pytest.raises(ConfigError) as from_syncd:
        load_config(syncd_cfg)
    trainer_cfg = tmp_path / "trainer.json"
    trainer_cfg.write_text(json.dumps(tiny_config(tmp_path, **{trainer_key: value})))
    with pytest.raises(ConfigError) as from_trainer:
        parse_config([str(trainer_cfg)])
    assert str(from_trainer.value).replace(trainer_key, "KEY") == str(from_syncd.value).replace(syncd_key, "KEY")
