"""Tables for the small pure pieces: config, manifests, completeness, staging."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from syncd.checkpoints import (
    MARKER,
    inspect_checkpoint,
    inspect_final,
    scan_local,
    write_checkpoint_marker,
)
from syncd.completeness import WRITER_STOPPED, Settler, judge
from syncd.config import build_config, parse_overrides
from syncd.errors import ConfigError, IntegrityError, UnsafeManifestError
from syncd.hashing import Digest
from syncd.manifest import build_manifest, parse_manifest
from syncd.stage import stage


# -- config -------------------------------------------------------------------------
def test_defaults_and_relative_paths(tmp_path):
    cfg = build_config({"output_dir": "out/run1", "gdrive_backup_dir": "backups", "learning_rate": 1}, base_dir=tmp_path)
    assert cfg.output_dir == tmp_path / "out" / "run1"
    assert cfg.remote_url == str(tmp_path / "backups")
    assert (cfg.run_name, cfg.save_total_limit, cfg.backup_keep_last) == ("run1", 5, 3)
    assert cfg.interval_seconds == 60.0 and cfg.delete_mode == "permanent"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--backup_keep_last", "2"], {"backup_keep_last": 2}),
        (["--run_name=7"], {"run_name": 7}),
        (["--gdrive_backup_dir", "/mnt/x"], {"gdrive_backup_dir": "/mnt/x"}),
        (["--syncd-wait-at-end", "false"], {"syncd_wait_at_end": False}),
    ],
)
def test_overrides_parse(args, expected):
    assert parse_overrides(args) == expected


def test_overrides_win_and_numbers_become_names(tmp_path):
    cfg = build_config({"output_dir": "o", "backup_keep_last": 3}, parse_overrides(["--backup_keep_last", "1",
                                                                                     "--run_name", "7"]),
                       base_dir=tmp_path)
    assert (cfg.backup_keep_last, cfg.run_name) == (1, "7")


@pytest.mark.parametrize("url", ["s3://b/p", "memory://x", "gdrive://tess_backups"])
def test_known_schemes_pass_through(url, tmp_path):
    assert build_config({"output_dir": "o", "gdrive_backup_dir": url}, base_dir=tmp_path).remote_url == url


def test_run_name_must_be_plain(tmp_path):
    with pytest.raises(ConfigError, match="run_name"):
        build_config({"output_dir": "o", "run_name": "a/b"}, base_dir=tmp_path)


# -- manifests ----------------------------------------------------------------------
def _manifest(**over):
    d = Digest(3, hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest())
    m = json.loads(build_manifest("run", "checkpoint-1", 1, [("a/b.bin", d), ("c", d)]).to_json())
    m.update(over)
    return m


def test_manifest_round_trip():
    m = parse_manifest(json.dumps(_manifest()).encode())
    assert [f.path for f in m.files] == ["a/b.bin", "c"] and m.size_bytes == 6 and m.step == 1


@pytest.mark.parametrize(
    "change, error",
    [
        ({"format": 2}, IntegrityError),
        ({"files": "nope"}, IntegrityError),
        ({"step": -1}, IntegrityError),
        ({"files": [{"path": "x", "size": -1, "md5": "0" * 32, "sha256": "0" * 64}]}, IntegrityError),
        ({"files": [{"path": "x", "size": 1, "md5": "zz", "sha256": "0" * 64}]}, IntegrityError),
        ({"files": [{"path": "../x", "size": 1, "md5": "0" * 32, "sha256": "0" * 64}]}, UnsafeManifestError),
        ({"files": [{"path": "/etc/x", "size": 1, "md5": "0" * 32, "sha256": "0" * 64}]}, UnsafeManifestError),
        ({"files": [{"path": "a\\..\\x", "size": 1, "md5": "0" * 32, "sha256": "0" * 64}]}, UnsafeManifestError),
        ({"files": [{"path": "a", "size": 1, "md5": "0" * 32, "sha256": "0" * 64},
                    {"path": "a/b", "size": 1, "md5": "0" * 32, "sha256": "0" * 64}]}, UnsafeManifestError),
        ({"files": [{"path": "syncd-manifest.json", "size": 1, "md5": "0" * 32, "sha256": "0" * 64}]},
         UnsafeManifestError),
    ],
    ids=["format", "files-type", "step", "size", "md5", "dotdot", "absolute", "backslash", "file-and-folder", "self"],
)
def test_manifest_defects_are_refused(change, error):
    with pytest.raises(error):
        parse_manifest(json.dumps(_manifest(**change)).encode())


def test_manifest_not_json():
    with pytest.raises(IntegrityError, match="not valid JSON"):
        parse_manifest(b"\xff\xfe")


# -- completeness -------------------------------------------------------------------
def _ckpt(root, name="checkpoint-10", files=("model.safetensors", "trainer_state.json"), age=100.0):
    d = root / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x" * 10)
        t = time.time() - age
        os.utime(d / f, (t, t))
    return d


@pytest.mark.parametrize(
    "files, quiet, expected",
    [
        (("model.safetensors", "trainer_state.json"), 30, (True, "quiet")),
        (("model.safetensors", "trainer_state.json"), 29.9, (False, "settling")),
        (("model.safetensors", "trainer_state.json"), WRITER_STOPPED, (True, "quiet")),
        (("model.safetensors",), WRITER_STOPPED, (False, "no trainer_state.json yet")),
        (("model.safetensors", "trainer_state.json", "checkpoint-is-incomplete.txt"), WRITER_STOPPED,
         (False, "still being written (incomplete sentinel)")),
    ],
    ids=["quiet-long-enough", "settling", "writer-stopped", "no-state", "sentinel"],
)
def test_completeness_without_marker_is_quiet_time_not_mtime(tmp_path, files, quiet, expected):
    # age=0: fresh mtimes; the rule reads only the observer's quiet time, never the file times.
    c = judge(inspect_checkpoint(_ckpt(tmp_path, files=files, age=0)), quiet, settle_seconds=30)
    assert (c.complete, c.reason) == expected and c.step == 10


def test_old_mtimes_do_not_make_a_folder_complete(tmp_path):
    """A folder copied in with old mtimes (cp -p, a clock jump) is still watched for a full quiet period."""
    s = Settler(settle_seconds=30)
    c = inspect_checkpoint(_ckpt(tmp_path, age=10_000))
    assert not s.judge(c, mono_now=100.0).complete
    assert s.due(c) == 130.0
    assert s.judge(c, mono_now=130.0).complete


def test_marker_decides_and_detects_a_truncated_file(tmp_path):
    d = _ckpt(tmp_path, files=("model.safetensors",), age=0)  # fresh and no trainer_state: only the marker can say
    write_checkpoint_marker(d)
    assert inspect_checkpoint(d).reason == "marker"
    assert judge(inspect_checkpoint(d), 0, settle_seconds=30).complete
    (d / "model.safetensors").write_bytes(b"x")
    c = judge(inspect_checkpoint(d), WRITER_STOPPED, settle_seconds=30)
    assert not c.complete and "does not match" in c.reason


def test_scan_orders_by_step_not_name(tmp_path):
    for n in ("checkpoint-100", "checkpoint-20", "checkpoint-3", "not-a-checkpoint"):
        _ckpt(tmp_path, n)
    assert [c.step for c in scan_local(tmp_path)] == [3, 20, 100]


def test_final_model_detection(tmp_path):
    assert inspect_final(tmp_path) is None
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"w")
    (tmp_path / "loss.png").write_bytes(b"p")  # tess-train plot's picture, rewritten at will
    (tmp_path / "train.log").write_text("growing")
    final = inspect_final(tmp_path)
    assert {f.path for f in final.files} == {"config.json", "model.safetensors"}
    assert judge(final, WRITER_STOPPED, 30).complete and not judge(final, 0, 30).complete


# -- staging ------------------------------------------------------------------------
def test_stage_links_files_and_survives_source_deletion(tmp_path):
    src = tmp_path / "out" / "checkpoint-5"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "opt.pt").write_bytes(b"o" * 100)
    (src / "trainer_state.json").write_text("{}")
    write_checkpoint_marker(src)
    staged = stage(inspect_checkpoint(src), tmp_path / "staging")
    assert staged is not None
    assert os.stat(staged / "sub" / "opt.pt").st_ino == os.stat(src / "sub" / "opt.pt").st_ino
    shutil.rmtree(src)  # the trainer's rotation
    assert (staged / "sub" / "opt.pt").read_bytes() == b"o" * 100
    assert (staged / MARKER).exists()


def test_stage_returns_none_when_the_source_vanishes(tmp_path):
    src = tmp_path / "checkpoint-5"
    src.mkdir()
    (src / "trainer_state.json").write_text("{}")
    ck = inspect_checkpoint(src)
    (src / "trainer_state.json").unlink()
    assert stage(ck, tmp_path / "staging") is None
    assert not (tmp_path / "staging" / "checkpoint-5").exists()


# -- signed manifests ---------------------------------------------------------------
def test_signed_manifest_round_trip_and_tamper():
    d = Digest(3, hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest())
    signed = build_manifest("run", "checkpoint-1", 1, [("w.bin", d)]).to_json("s3cret")
    assert parse_manifest(signed, key="s3cret").files[0].path == "w.bin"
    assert parse_manifest(signed).step == 1  # without a key the signature is simply not required
    doc = json.loads(signed)
    doc["files"][0]["sha256"] = "f" * 64  # a forger swaps a file and its checksum
    with pytest.raises(IntegrityError, match="wrong signature"):
        parse_manifest(json.dumps(doc).encode(), key="s3cret")
    with pytest.raises(IntegrityError, match="wrong signature"):
        parse_manifest(signed, key="another key")
    unsigned = build_manifest("run", "checkpoint-1", 1, [("w.bin", d)]).to_json()
    with pytest.raises(IntegrityError, match="not signed"):
        parse_manifest(unsigned, key="s3cret")


def test_symlinks_are_never_followed_out_of_the_output_folder(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("private")
    out = tmp_path / "out"
    src = out / "checkpoint-5"
    src.mkdir(parents=True)
    (src / "trainer_state.json").write_text("{}")
    (src / "leak.bin").symlink_to(secret)
    (src / "leakdir").symlink_to(tmp_path)
    (out / "checkpoint-9").symlink_to(src)  # a linked checkpoint folder is not ours to mirror
    write_checkpoint_marker(src)
    ck = inspect_checkpoint(src)
    assert {f.path for f in ck.files} == {"trainer_state.json", MARKER}
    assert [c.name for c in scan_local(out)] == ["checkpoint-5"]
    staged = stage(ck, tmp_path / "staging")
    assert sorted(p.name for p in staged.rglob("*")) == sorted(["trainer_state.json", MARKER])
