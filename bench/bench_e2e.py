"""Mirror and restore speed as a user sees them, beside rclone and cp in the same run.

    python bench/bench_e2e.py [--size-gb 2] [--rounds 5]

Mirror, one round per contender, contenders alternating, every round from a cold
cache (``posix_fadvise(DONTNEED)`` on every source file after ``sync``):

- syncd: a ``syncd run`` daemon is already watching an empty output folder; the clock
  starts when a complete checkpoint folder appears there (renamed in, marker inside,
  as our trainer leaves it), and stops when ``syncd wait`` has returned and ``sync``
  has flushed the remote. Detection, staging, hashing, read-back verification and the
  commit are all inside.
- rclone: ``rclone copy --transfers 4`` of the same folder, then ``sync``.
- cp: ``cp -r``, then ``sync`` (no hashing, no verification).

Restore, the same way the other direction: the committed copy (cold) into a fresh
folder with ``syncd restore --to`` (verified, marker written) against ``rclone copy``
and ``cp -r`` of the remote folder, each then ``sync``.

Prints the median of the rounds and syncd's ratio to rclone (target >= 0.9x, goal 1.0x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_syncd import make_checkpoint  # noqa: E402

MB = 1_000_000
PY = sys.executable


def drop_cache(root: Path) -> None:
    """Flush, then ask the kernel to forget every page of the files under ``root``."""
    os.sync()
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def syncd(*args: str, cwd: Path) -> None:
    subprocess.run([PY, "-m", "syncd", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


class Daemon:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cfg = work / "cfg.json"
        self.out = work / "out"
        self.remote = work / "remote"
        work.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(json.dumps({
            "output_dir": str(self.out), "gdrive_backup_dir": str(self.remote), "run_name": "run",
            "backup_keep_last": 3, "save_total_limit": None, "syncd_min_free_gb": 0,
            "syncd_interval_seconds": 60}))
        self.out.mkdir(parents=True)
        self.proc = subprocess.Popen([PY, "-m", "syncd", "run", str(self.cfg)], cwd=work,
                                     stdout=subprocess.DEVNULL, stderr=open(work / "syncd.log", "ab"))
        status = self.out / ".syncd" / "status.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(status.read_text()).get("pid") == self.proc.pid:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.proc.kill()
        raise SystemExit(f"syncd did not start; see {work / 'syncd.log'}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def mirror_rounds(work: Path, ck: Path, rounds: int) -> tuple[dict[str, list[float]], Path]:
    """Each round: the same folder, cold, to each contender; returns times and a committed copy."""
    daemon = Daemon(work / "syncd")
    times: dict[str, list[float]] = {"syncd": [], "rclone copy": [], "cp -r": []}
    step = ck.name
    try:
        for i in range(rounds):
            # syncd: a new step each round (a re-used name would be a re-save of that step).
            name = f"checkpoint-{100 + i}"
            state = json.loads((ck / "checkpoint-complete.json").read_text())
            state["step"] = 100 + i
            (ck / "checkpoint-complete.json").write_text(json.dumps(state))
            drop_cache(ck)
            t0 = time.perf_counter()
            os.rename(ck, daemon.out / name)
            syncd("wait", str(daemon.cfg), "--timeout", "900", cwd=daemon.work)
            os.sync()
            times["syncd"].append(time.perf_counter() - t0)
            os.rename(daemon.out / name, ck)

            dest = work / "rclone-remote"
            shutil.rmtree(dest, ignore_errors=True)
            drop_cache(ck)
            t0 = time.perf_counter()
            subprocess.run(["rclone", "copy", "--transfers", "4", str(ck), str(dest / step)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.sync()
            times["rclone copy"].append(time.perf_counter() - t0)
            shutil.rmtree(dest)

            dest = work / "cp-remote"
            dest.mkdir(exist_ok=True)
            drop_cache(ck)
            t0 = time.perf_counter()
            subprocess.run(["cp", "-r", str(ck), str(dest)], check=True)
            os.sync()
            times["cp -r"].append(time.perf_counter() - t0)
            shutil.rmtree(dest)
    finally:
        daemon.stop()
    return times, daemon


def restore_rounds(daemon: Daemon, rounds: int) -> dict[str, list[float]]:
    committed = sorted(p for p in (daemon.remote / "run").iterdir()
                       if (p / "syncd-manifest.json").is_file())[-1]
    times: dict[str, list[float]] = {"syncd": [], "rclone copy": [], "cp -r": []}
    for _ in range(rounds):
        dest = daemon.work / "restored"
        shutil.rmtree(dest, ignore_errors=True)
        drop_cache(committed)
        t0 = time.perf_counter()
        syncd("restore", str(daemon.cfg), "--to", str(dest), "--quiet", cwd=daemon.work)
        os.sync()
        times["syncd"].append(time.perf_counter() - t0)
        shutil.rmtree(dest)

        dest = daemon.work / "rclone-restored"
        drop_cache(committed)
        t0 = time.perf_counter()
        subprocess.run(["rclone", "copy", "--transfers", "4", str(committed), str(dest / committed.name)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.sync()
        times["rclone copy"].append(time.perf_counter() - t0)
        shutil.rmtree(dest)

        dest = daemon.work / "cp-restored"
        dest.mkdir()
        drop_cache(committed)
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(committed), str(dest)], check=True)
        os.sync()
        times["cp -r"].append(time.perf_counter() - t0)
        shutil.rmtree(dest)
    return times


def report(title: str, nbytes: int, times: dict[str, list[float]]) -> None:
    print(f"\n{title} ({len(times['syncd'])} alternating rounds, cold cache, median)")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        spread = ", ".join(f"{nbytes / x / MB:.0f}" for x in times[name])
        print(f"  {name:12s} {t:7.2f} s  {nbytes / t / MB:7.1f} MB/s   (rounds: {spread} MB/s)")
    print(f"  syncd / rclone: {med['rclone copy'] / med['syncd']:.2f}x  (target >= 0.9x, goal 1.0x)")
    print(f"  syncd / cp:     {med['cp -r'] / med['syncd']:.2f}x  (cp neither hashes nor verifies)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    if not shutil.which("rclone"):
        raise SystemExit("rclone is the peer here: install it (apt-get install rclone)")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        ck = make_checkpoint(work / "src", int(a.size_gb * 1e9))
        nbytes = folder_bytes(ck)
        times, daemon = mirror_rounds(work, ck, a.rounds)
        report(f"[mirror] {nbytes / 1e9:.2f} GB checkpoint to a folder remote", nbytes, times)
        report(f"[restore] {nbytes / 1e9:.2f} GB from the folder remote", nbytes, restore_rounds(daemon, a.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
