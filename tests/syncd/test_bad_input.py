"""Bad input, in process: one ``syncd: error:`` line on stderr, the right exit code, no
traceback, and nothing written. Each case runs ``syncd.cli.main`` directly (fast)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.config import build_config
from syncd.errors import ConfigError
from syncd.locking import DaemonLock

BASE = {"output_dir": "out", "gdrive_backup_dir": "remote", "run_name": "run"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Relative paths resolve in the test's folder; ``run`` installs signal handlers: put them back."""
    monkeypatch.chdir(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("syncd: error: "), f"expected one error line, got:\n{err}"
    return code, lines[0]


def write(path: Path, keys: dict) -> Path:
    path.write_text(json.dumps(keys))
    return path


def tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


# -- 1. restore --to a file, or below one --------------------------------------------
@pytest.mark.parametrize("to", ["a-file", "a-file/sub", "a-file/sub/deeper"])
def test_restore_to_a_file_is_exit_2(tmp_path, capsys, to):
    (tmp_path / "a-file").write_text("keep me")
    cfg = write(tmp_path / "cfg.json", BASE)
    code, line = cli(capsys, "restore", str(cfg), "--to", to)
    assert code == 2 and "--to " in line and "a-file is a file, not a folder" in line
    assert (tmp_path / "a-file").read_text() == "keep me"


# -- 2. output_dir is a file, or read-only --------------------------------------------
@pytest.mark.parametrize("command", ["run", "start", "status", "list", "wait", "restore"])
@pytest.mark.parametrize("output_dir", ["a-file", "a-file/out"], ids=["file", "below-file"])
def test_output_dir_that_is_a_file_is_exit_2(tmp_path, capsys, command, output_dir):
    (tmp_path / "a-file").write_text("keep me")
    cfg = write(tmp_path / "cfg.json", {**BASE, "output_dir": output_dir})
    before = tree(tmp_path)
    code, line = cli(capsys, command, str(cfg))
    assert code == 2 and "output_dir" in line and "a-file is a file, not a folder" in line
    assert tree(tmp_path) == before and (tmp_path / "a-file").read_text() == "keep me"


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into: a read-only tmpfs (root ignores mode bits), else mode 0o555."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.fail("root without permission to mount a read-only tmpfs (the fault tests need it too)")
        ro.chmod(0o555)
    try:
        yield ro
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            ro.chmod(0o755)


@pytest.mark.parametrize("command", ["run", "start"])
@pytest.mark.parametrize("below", [False, True], ids=["itself", "below"])
def test_read_only_output_dir_refuses_to_start(tmp_path, capsys, read_only_dir, command, below):
    out = read_only_dir / "out" if below else read_only_dir
    cfg = write(tmp_path / "cfg.json", {**BASE, "output_dir": str(out)})
    code, line = cli(capsys, command, str(cfg))
    assert code == 2 and f"output_dir {out} is not writable" in line
    assert not (tmp_path / "remote").exists()


@pytest.mark.parametrize("command", ["status", "list", "wait"])
def test_read_only_output_dir_can_still_be_inspected(tmp_path, capsys, read_only_dir, command):
    """Looking needs no writing: an archived, read-only run stays readable (exit 0, no traceback)."""
    cfg = write(tmp_path / "cfg.json", {**BASE, "output_dir": str(read_only_dir)})
    assert main([command, str(cfg)]) == 0
    assert "Traceback" not in capsys.readouterr().err


# -- 3. a config that is not UTF-8 --------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "latin-1"])
def test_config_not_utf8_is_exit_2(tmp_path, capsys, encoding):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(json.dumps({**BASE, "run_name": "caf\u00e9"}, ensure_ascii=False).encode(encoding))
    code, line = cli(capsys, "status", str(cfg))
    assert code == 2 and f"config {cfg} is not UTF-8 text" in line
    assert not (tmp_path / "out").exists()


def test_config_with_a_bom_is_read(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(b"\xef\xbb\xbf" + json.dumps(BASE).encode())
    assert main(["status", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "run"


# -- 4. numbers out of range -----------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("syncd_http_port", 70000, "syncd_http_port must be at most 65535, not 70000"),
        ("syncd_interval_seconds", 1e300, "syncd_interval_seconds must be at most 86400"),
        ("syncd_gdrive_chunk_mb", 1e308, "syncd_gdrive_chunk_mb must be at most 1024"),
        ("syncd_settle_seconds", 1e300, "syncd_settle_seconds must be at most 86400"),
        ("syncd_stale_seconds", 1e300, "syncd_stale_seconds must be at most 2592000"),
        ("syncd_wait_timeout_seconds", 1e300, "syncd_wait_timeout_seconds must be at most 604800"),
        ("syncd_bwlimit_mbps", 1e308, "syncd_bwlimit_mbps must be at most 1000000"),
        ("syncd_upload_workers", 10**9, "syncd_upload_workers must be at most 256"),
    ],
    ids=["port", "interval", "chunk", "settle", "stale", "wait-timeout", "bwlimit", "workers"],
)
@pytest.mark.parametrize("how", ["file", "flag"])
def test_absurd_numbers_are_exit_2(tmp_path, capsys, key, value, message, how):
    if how == "file":
        cfg, extra = write(tmp_path / "cfg.json", {**BASE, key: value}), []
    else:
        cfg, extra = write(tmp_path / "cfg.json", BASE), [f"--{key}", json.dumps(value)]
    code, line = cli(capsys, "run", str(cfg), *extra)
    assert code == 2 and message in line
    assert not (tmp_path / "out").exists()


def test_bounds_themselves_are_accepted(tmp_path):
    cfg = build_config({"output_dir": "o", "syncd_http_port": 65535, "syncd_interval_seconds": 86400,
                        "syncd_gdrive_chunk_mb": 1024}, base_dir=tmp_path)
    assert (cfg.http_port, cfg.interval_seconds, cfg.remote_options["syncd_gdrive_chunk_mb"]) == (65535, 86400.0, 1024.0)


# -- 5. NUL bytes in paths -------------------------------------------------------------
@pytest.mark.parametrize("key", ["output_dir", "gdrive_backup_dir", "run_name"])
@pytest.mark.parametrize("command", ["run", "status", "restore"])
def test_nul_byte_in_a_config_path_is_exit_2(tmp_path, capsys, key, command):
    cfg = write(tmp_path / "cfg.json", {**BASE, key: "a\0b"})
    code, line = cli(capsys, command, str(cfg))
    assert code == 2 and f"config key {key} must not contain a NUL byte" in line
    assert tree(tmp_path) == [cfg]


def test_nul_byte_in_restore_to_is_exit_2(tmp_path, capsys):
    cfg = write(tmp_path / "cfg.json", BASE)
    code, line = cli(capsys, "restore", str(cfg), "--to", "tar\0get")
    assert code == 2 and "--to must not contain a NUL byte" in line


def test_nul_byte_in_the_config_path_is_exit_2(capsys):
    code, line = cli(capsys, "status", "cfg\0.json")
    assert code == 2 and "NUL byte" in line


# -- 6. save_total_limit: null keeps everything --------------------------------------
@pytest.mark.parametrize("keys, expected", [({}, 5), ({"save_total_limit": None}, None),
                                            ({"save_total_limit": 2}, 2)],
                         ids=["absent-is-5", "null-is-keep-all", "given"])
def test_save_total_limit_null_means_keep_all(tmp_path, keys, expected):
    assert build_config({"output_dir": "o", **keys}, base_dir=tmp_path).save_total_limit == expected


def test_save_total_limit_zero_is_still_refused(tmp_path):
    with pytest.raises(ConfigError, match="save_total_limit must be at least 1"):
        build_config({"output_dir": "o", "save_total_limit": 0}, base_dir=tmp_path)


# -- 7. start on a folder another daemon owns ---------------------------------------
def test_start_on_a_locked_folder_is_exit_6(tmp_path, capsys):
    cfg = write(tmp_path / "cfg.json", BASE)
    lock = DaemonLock(tmp_path / "out" / ".syncd")
    lock.acquire()
    try:
        code, line = cli(capsys, "start", str(cfg))
    finally:
        lock.release()
    assert code == 6 and "already running" in line
    assert not (tmp_path / "out" / ".syncd" / "syncd.log").exists(), "no second daemon was spawned"
