"""The wall clock jumping under a running daemon: an NTP step, a VM restored from a snapshot.

syncd runs with ``wallclock.c`` preloaded, which shifts its realtime clock by an
offset the test rewrites while it runs; its monotonic clock, sleeps and timed waits
are left alone, as on a real machine. File mtimes still come from the kernel's own
clock, so after a jump the daemon sees them as it would see files written just
before a real jump.
"""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.checkpoints import walk_files
from syncd.remote_state import RemoteIndex
from syncd.remotes.local import LocalRemote
from tests.conftest import stop_gracefully, syncd, wait_for
from tests.faults.test_crash_matrix import check_invariants, config

SHIM = Path(__file__).with_name("wallclock.c")


class WallClock:
    """The offset shared with every process started with ``env``."""

    def __init__(self, lib: Path, offset_file: Path) -> None:
        self.file = offset_file
        self.file.write_bytes(struct.pack("<q", 0))
        self.offset_ns = 0
        self.env = {"LD_PRELOAD": str(lib), "WALLCLOCK_OFFSET_FILE": str(offset_file)}

    def jump(self, seconds: float) -> None:
        self.offset_ns += int(seconds * 1e9)
        with open(self.file, "r+b") as f, mmap.mmap(f.fileno(), 8) as m:
            m[:8] = struct.pack("<q", self.offset_ns)


@pytest.fixture(scope="session")
def wallclock_lib(tmp_path_factory) -> Path:
    lib = tmp_path_factory.mktemp("wallclock") / "wallclock.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(lib), str(SHIM), "-ldl"],
                   check=True)
    return lib


@pytest.fixture
def wallclock(wallclock_lib, tmp_path) -> WallClock:
    return WallClock(wallclock_lib, tmp_path / "wallclock.offset")


CLOCKS = """
import datetime, json, sys, threading, time
for _ in sys.stdin:
    t0 = time.monotonic()
    time.sleep(0.05)
    threading.Event().wait(0.05)
    print(json.dumps([time.time(), datetime.datetime.now().timestamp(), time.monotonic(),
                      time.monotonic() - t0]), flush=True)
"""


def test_the_shim_moves_the_wall_clock_only(wallclock):
    proc = subprocess.Popen([sys.executable, "-c", CLOCKS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**wallclock.env})
    try:
        def read() -> list[float]:
            proc.stdin.write("\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        before = read()
        wallclock.jump(-86400)
        back = read()
        wallclock.jump(+3 * 86400)
        ahead = read()
    finally:
        proc.kill()
        proc.wait()
    for a, b, jump in ((before, back, -86400), (back, ahead, 3 * 86400)):
        assert abs((b[0] - a[0]) - jump) < 30, "time.time() follows the offset"
        assert abs((b[1] - a[1]) - jump) < 30, "datetime.now() follows the offset"
        assert 0 < b[2] - a[2] < 30, "the monotonic clock does not jump"
    assert all(0.09 <= r[3] < 30 for r in (before, back, ahead)), "sleeps and timed waits still work"


def committed_files(remote_root: Path, name: str) -> set[str] | None:
    for e in RemoteIndex(LocalRemote(remote_root), "run").scan():
        if e.name == name and e.committed:
            return {f.path for f in e.manifest.files}
    return None


def test_jump_forward_while_a_checkpoint_is_written_commits_it_whole(wallclock, tmp_path, procs):
    """A jump forward makes every mtime look old: a checkpoint still gaining files must not look settled."""
    out, remote = tmp_path / "out", tmp_path / "remote"
    cfg = config(tmp_path, str(remote), syncd_settle_seconds=3.0)
    daemon = procs.syncd_run(cfg, cwd=tmp_path, env=wallclock.env)
    # No marker: trainer_state.json lands first, then six late shards, 0.5 s apart.
    train = procs.hf_train(out, "--max-steps", "5", "--save-steps", "5", "--late-shards", "6",
                           "--late-gap", "0.5", cwd=tmp_path)
    wait_for(lambda: (out / "checkpoint-5" / "trainer_state.json").exists(), 120, interval=0.01,
             what="the save to begin")
    wallclock.jump(+3 * 3600)
    assert train.wait(120) == 0
    sent = wait_for(lambda: committed_files(remote, "checkpoint-5"), 60, what="checkpoint-5 committed")
    local = {f.path for f in walk_files(out / "checkpoint-5")}
    assert "late/shard-5.bin" in local
    assert sent == local, f"committed before the last files landed; missing {sorted(local - sent)}"
    assert check_invariants(LocalRemote(remote), out) == ["checkpoint-5"]
    assert stop_gracefully(daemon) == 0
    assert "the wall clock jumped by +10800 s" in (tmp_path / "syncd-0.log").read_text()


def test_jump_back_and_forward_keeps_timers_and_events_working(wallclock, tmp_path, procs):
    """A jump back would park every timer as far in the future as the jump."""
    out, remote_root = tmp_path / "out", tmp_path / "remote"
    remote = LocalRemote(remote_root)
    cfg = config(tmp_path, str(remote_root))
    log = tmp_path / "syncd-0.log"
    daemon = procs.syncd_run(cfg, cwd=tmp_path, env=wallclock.env)
    train = procs.hf_train(out, "--max-steps", "10", "--save-steps", "5", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0

    wallclock.jump(-86400)
    wait_for(lambda: "the wall clock jumped by -86400 s" in log.read_text(), 30, what="the jump noticed")
    # Nothing changes locally: only the reconcile timer can notice the remote lost a checkpoint.
    shutil.rmtree(remote_root / "run" / "checkpoint-10")
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-5"], 60,
             what="the timer to re-upload checkpoint-10 after the jump back")
    # Events still wake it: training goes on and the new checkpoint is mirrored.
    train = procs.hf_train(out, "--max-steps", "15", "--save-steps", "5", "--resume", "auto", cwd=tmp_path)
    assert train.wait(120) == 0
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-15"], 60,
             what="checkpoint-15 mirrored after the jump back")

    wallclock.jump(+2 * 86400)
    wait_for(lambda: "the wall clock jumped by +172800 s" in log.read_text(), 30, what="the jump noticed")
    shutil.rmtree(remote_root / "run" / "checkpoint-15")
    wait_for(lambda: check_invariants(remote, out) == ["checkpoint-10", "checkpoint-15"], 60,
             what="the timer to re-upload checkpoint-15 after the jump forward")
    status = json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)
    assert status["lag"] == {"steps": 0, "seconds": 0.0}
    assert stop_gracefully(daemon) == 0
