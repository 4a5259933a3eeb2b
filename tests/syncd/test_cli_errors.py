"""Bad input of every kind: one clear line on stderr, a non-zero exit, nothing lost."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.conftest import stop_gracefully, syncd, write_config


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


BASE = {"output_dir": "out", "gdrive_backup_dir": "remote", "run_name": "run"}


@pytest.mark.parametrize(
    "keys, args, code, message",
    [
        (None, [], 2, "config file not found"),
        ("{not json", [], 2, "is not valid JSON"),
        ({**BASE, "gdrive_backup_dir": "bogus://x/y"}, [], 2, "unsupported remote URL scheme bogus://"),
        ({**BASE, "backup_keep_last": "three"}, [], 2, "backup_keep_last must be an integer"),
        ({**BASE, "backup_keep_last": 0}, [], 2, "backup_keep_last must be at least 1"),
        ({**BASE, "syncd_interval_seconds": -1}, [], 2, "syncd_interval_seconds must be at least"),
        ({**BASE, "syncd_intervl_seconds": 5}, [], 2, "unknown config key syncd_intervl_seconds"),
        ({**BASE, "syncd_delete_mode": "shred"}, [], 2, "syncd_delete_mode must be one of permanent, trash"),
        (BASE, ["--bogus_key", "1"], 2, "unknown option --bogus_key"),
        (BASE, ["--backup_keep_last"], 2, "--backup_keep_last needs a value"),
        ({"gdrive_backup_dir": "remote"}, [], 2, "has no output_dir"),
        ([1, 2], [], 2, "must hold a JSON object"),
    ],
    ids=["missing", "malformed", "scheme", "type", "zero", "negative", "unknown-key", "choice",
         "unknown-flag", "flag-without-value", "no-output-dir", "not-an-object"],
)
@pytest.mark.parametrize("command", ["run", "status", "restore"])
def test_bad_config_is_one_line_and_exit_2(tmp_path, keys, args, code, message, command):
    cfg = tmp_path / "cfg.json"
    if isinstance(keys, str):
        cfg.write_text(keys)
    elif keys is not None:
        cfg.write_text(json.dumps(keys))
    r = syncd(command, str(cfg), *args, cwd=tmp_path, timeout=60)
    assert r.returncode == code
    assert message in one_line(r.stderr)
    assert not (tmp_path / "out").exists(), "bad input must not create anything"


def test_unwritable_remote_refuses_to_start(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    cfg = write_config(tmp_path / "cfg.json", **{**BASE, "gdrive_backup_dir": str(tmp_path / "a-file" / "remote")})
    r = syncd("run", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode == 3
    assert "is not writable" in one_line(r.stderr)
    r = syncd("start", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode != 0 and "failed to start" in one_line(r.stderr) and "not writable" in r.stderr


def test_second_daemon_on_the_same_folder_is_refused(tmp_path, procs):
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    first = procs.syncd_run(cfg, cwd=tmp_path)
    r = syncd("run", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode == 6
    assert f"another syncd (pid {first.pid}) is already running" in one_line(r.stderr)
    r = syncd("start", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode == 6 and "already running" in one_line(r.stderr)
    assert first.poll() is None, "the first daemon must survive"
    assert stop_gracefully(first) == 0


def test_start_status_stop_detached(tmp_path):
    cfg = write_config(tmp_path / "cfg.json", **BASE, syncd_interval_seconds=1)
    try:
        r = syncd("start", str(cfg), cwd=tmp_path)
        assert r.returncode == 0 and "syncd started" in r.stdout, r.stderr
        status = json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)
        assert status["daemon"]["running"] and status["remote"] == str(tmp_path / "remote")
        human = syncd("status", str(cfg), cwd=tmp_path).stdout
        assert "daemon   running" in human and "(no checkpoints yet)" in human
    finally:
        r = syncd("stop", str(cfg), cwd=tmp_path)
    assert r.returncode == 0 and "syncd stopped" in r.stdout
    assert not json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)["daemon"]["running"]
    assert "syncd watching" in (tmp_path / "out" / ".syncd" / "syncd.log").read_text()


def _hostile_remote(tmp_path, path: str) -> None:
    ck = tmp_path / "remote" / "run" / "checkpoint-1"
    ck.mkdir(parents=True)
    data = b"pwn"
    (tmp_path / "remote" / "evil").write_bytes(data)
    manifest = {"format": 1, "run": "run", "name": "checkpoint-1", "step": 1, "created": "2026-01-01T00:00:00+00:00",
                "files": [{"path": path, "size": 3, "md5": hashlib.md5(data).hexdigest(),
                           "sha256": hashlib.sha256(data).hexdigest()}]}
    (ck / "syncd-manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("path", ["../../evil", "/tmp/evil", "a/../../evil", "ok/./x", "dup"],
                         ids=["dotdot", "absolute", "nested-dotdot", "dot", "dup"])
def test_restore_refuses_hostile_manifests(tmp_path, path):
    if path == "dup":
        _hostile_remote(tmp_path, "x")
        mf = tmp_path / "remote" / "run" / "checkpoint-1" / "syncd-manifest.json"
        doc = json.loads(mf.read_text())
        doc["files"].append(dict(doc["files"][0]))
        mf.write_text(json.dumps(doc))
    else:
        _hostile_remote(tmp_path, path)
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    before = sorted(p for p in tmp_path.rglob("*"))
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "target"), cwd=tmp_path)
    assert r.returncode == 5  # nothing valid to restore
    line = one_line(r.stderr)
    assert "no committed checkpoint" in line and "checkpoint-1: " in line
    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 4 and "BAD manifest" in r.stdout
    after = sorted(p for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and "target" not in str(p)] == []
    assert not (tmp_path / "target" / "checkpoint-1").exists()


def test_restore_refuses_to_overwrite_a_different_checkpoint(tmp_path, procs):
    cfg = write_config(tmp_path / "cfg.json", **BASE, syncd_settle_seconds=0.2)
    ck = tmp_path / "out" / "checkpoint-3"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text('{"global_step": 3}')
    (ck / "model.safetensors").write_bytes(b"weights")
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "30", cwd=tmp_path).returncode == 0
    assert stop_gracefully(daemon) == 0
    # Identical copy already there: nothing to do, success.
    r = syncd("restore", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (ck / "model.safetensors").write_bytes(b"changed!")
    r = syncd("restore", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "exists and differs" in one_line(r.stderr)
    assert (ck / "model.safetensors").read_bytes() == b"changed!"


def test_wait_without_daemon_says_so(tmp_path):
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    ck = tmp_path / "out" / "checkpoint-1"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text("{}")
    r = syncd("wait", str(cfg), "--timeout", "1", cwd=tmp_path)
    assert r.returncode == 7 and "syncd is not running" in one_line(r.stderr)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "parent-link"])
def test_restore_refuses_links_and_devices_planted_on_the_remote(tmp_path, kind):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"ssh private key")
    data = secret.read_bytes()
    ck = tmp_path / "remote" / "run" / "checkpoint-1"
    ck.mkdir(parents=True)
    if kind == "symlink":
        (ck / "weights.bin").symlink_to(secret)
        path = "weights.bin"
    elif kind == "fifo":
        os.mkfifo(ck / "weights.bin")
        path = "weights.bin"
    else:
        (ck / "sub").symlink_to(tmp_path)
        path = "sub/secret.txt"
    manifest = {"format": 1, "run": "run", "name": "checkpoint-1", "step": 1, "created": "2026-01-01T00:00:00+00:00",
                "files": [{"path": path, "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                           "sha256": hashlib.sha256(data).hexdigest()}]}
    (ck / "syncd-manifest.json").write_text(json.dumps(manifest))
    cfg = write_config(tmp_path / "cfg.json", **BASE)
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "target"), cwd=tmp_path, timeout=30)
    assert r.returncode == 4, r.stderr  # a committed copy that fails verification: integrity, not absence
    assert "verified" in r.stderr.splitlines()[-1]
    target = tmp_path / "target"
    assert not target.exists() or not any(p.is_file() for p in target.rglob("*")), "nothing may be written"


def test_http_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path / "cfg.json", **BASE, syncd_http_port=port)
        r = syncd("run", str(cfg), cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert f"syncd_http_port: cannot listen on 127.0.0.1:{port}" in one_line(r.stderr)
