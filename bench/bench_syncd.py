"""syncd benchmarks; each figure is printed next to a peer measured in the same run.

    python bench/bench_syncd.py [--size-gb 1] [--rss-gb 2] [--idle-seconds 60]

1. Mirror a ~1 GB checkpoint-shaped folder to a local folder remote (staging,
   hashing, read-back verification and the commit included) against
   `rclone copy` and `cp -r` of the same folder. Target: >= 0.8x rclone.
2. Detection-to-commit latency of a small checkpoint under `syncd run`
   (marker written -> manifest on the remote). Target: median < 1 s.
3. Peak RSS of `syncd run` mirroring a small and a large checkpoint. Target:
   < 150 MB and flat in checkpoint size.
4. CPU used by an idle `syncd run`. Target: < 1% of a core.

Every run reads from the page cache: all contenders see the same warm cache.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import write_random  # noqa: E402

from syncd import identity  # noqa: E402
from syncd.checkpoints import inspect_checkpoint, write_checkpoint_marker  # noqa: E402
from syncd.remote_state import RemoteIndex  # noqa: E402
from syncd.remotes.local import LocalRemote  # noqa: E402
from syncd.stage import stage  # noqa: E402
from syncd.upload import Uploader, UploadJob  # noqa: E402

MB = 1_000_000


def make_checkpoint(folder: Path, total_bytes: int, step: int = 100) -> Path:
    """A TESS-shaped checkpoint: weights ~1/3, optimizer ~2/3, a few small files."""
    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    write_random(ck / "model.safetensors", total_bytes // 3)
    write_random(ck / "optimizer.pt", total_bytes - total_bytes // 3)
    for name, size in (("scheduler.pt", 1_500), ("rng_state.pth", 15_000), ("training_args.bin", 6_000)):
        write_random(ck / name, size)
    (ck / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    write_checkpoint_marker(ck, step)
    return ck


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_throughput(work: Path, size_gb: float, repeats: int) -> None:
    src_root = work / "src"
    ck = make_checkpoint(src_root, int(size_gb * 1e9))
    nbytes = folder_bytes(ck)
    for f in ck.rglob("*"):  # warm the page cache once for everybody
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(16 * 1024 * 1024):
                    pass

    def syncd_once() -> None:
        dest = work / "syncd-remote"
        shutil.rmtree(dest, ignore_errors=True)
        state = work / "syncd-state"
        shutil.rmtree(state, ignore_errors=True)
        remote = LocalRemote(dest)
        staged = stage(inspect_checkpoint(ck), state / "staging")
        identity.write_remote_record(remote, "run", "bench")  # the daemon's first upload does this once
        Uploader(remote, RemoteIndex(remote, "run"), state, workers=4).upload(
            UploadJob(ck.name, 100, staged), threading.Event(), "bench")

    def rclone_once() -> None:
        dest = work / "rclone-remote"
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["rclone", "copy", "--transfers", "4", str(ck), str(dest / ck.name)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cp_once() -> None:
        dest = work / "cp-remote"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        subprocess.run(["cp", "-r", str(ck), str(dest)], check=True)

    contenders = {"syncd": syncd_once, "cp -r": cp_once}
    if shutil.which("rclone"):
        contenders["rclone copy"] = rclone_once
    else:
        print("  rclone not found (apt-get install rclone); its column is skipped")
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            best[name] = min(best.get(name, float("inf")), timed(fn))
    print(f"\n[1] mirror {nbytes / 1e9:.2f} GB to a local folder (best of {repeats})")
    for name, t in best.items():
        print(f"  {name:12s} {t:7.2f} s  {nbytes / t / MB:8.1f} MB/s")
    if "rclone copy" in best:
        print(f"  syncd / rclone throughput: {best['rclone copy'] / best['syncd']:.2f}x  (target >= 0.8x)")
    print(f"  syncd / cp throughput:     {best['cp -r'] / best['syncd']:.2f}x  "
          "(cp neither hashes nor verifies)")
    shutil.rmtree(src_root)


def write_config(work: Path, **extra) -> Path:
    keys = {"output_dir": str(work / "out"), "gdrive_backup_dir": str(work / "remote"), "run_name": "run",
            "backup_keep_last": 2, "save_total_limit": 2, "syncd_settle_seconds": 5,
            "syncd_min_free_gb": 0}
    keys.update(extra)
    path = work / "cfg.json"
    path.write_text(json.dumps(keys))
    return path


def start_daemon(cfg: Path, work: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(work / "syncd.log", "ab"))
    status = work / "out" / ".syncd" / "status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if json.loads(status.read_text()).get("pid") == proc.pid:
                return proc
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("syncd did not start; see syncd.log")


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def bench_latency(work: Path, n: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = write_config(work, backup_keep_last=3)
    (work / "out").mkdir()
    proc = start_daemon(cfg, work)
    lat = []
    try:
        for i in range(1, n + 1):
            ck = work / "out" / f"checkpoint-{i}"
            ck.mkdir()
            write_random(ck / "model.safetensors", 2 * MB)
            (ck / "trainer_state.json").write_text("{}")
            t0 = time.perf_counter()
            write_checkpoint_marker(ck, i)
            manifest = work / "remote" / "run" / f"checkpoint-{i}" / "syncd-manifest.json"
            while not manifest.exists():
                time.sleep(0.002)
                if time.perf_counter() - t0 > 30:
                    raise SystemExit("no commit within 30 s")
            lat.append(time.perf_counter() - t0)
            time.sleep(0.2)
    finally:
        stop_daemon(proc)
    print(f"\n[2] detection-to-commit of a 2 MB checkpoint, {n} runs")
    print(f"  median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms  (target: median < 1 s)")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_rss(work: Path, sizes_gb: list[float]) -> None:
    print("\n[3] peak RSS of `syncd run` while mirroring one checkpoint")
    for size in sizes_gb:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        cfg = write_config(work)
        (work / "out").mkdir()
        proc = start_daemon(cfg, work)
        try:
            make_checkpoint(work / "out", int(size * 1e9))
            manifest = work / "remote" / "run" / "checkpoint-100" / "syncd-manifest.json"
            t0 = time.perf_counter()
            while not manifest.exists():
                time.sleep(0.05)
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("no commit within 600 s")
            rss = peak_rss_mb(proc.pid)
        finally:
            stop_daemon(proc)
        print(f"  {size:4.1f} GB checkpoint: peak RSS {rss:6.1f} MB  (target < 150 MB, flat in size)")
        shutil.rmtree(work, ignore_errors=True)


def bench_idle(work: Path, seconds: float) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = write_config(work)
    (work / "out").mkdir()
    make_checkpoint(work / "out", 10 * MB)
    proc = start_daemon(cfg, work)
    try:
        time.sleep(3)  # let the first upload finish
        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu(), time.perf_counter()
        time.sleep(seconds)
        used = cpu() - c0
        wall = time.perf_counter() - t0
    finally:
        stop_daemon(proc)
    print(f"\n[4] idle `syncd run` over {wall:.0f} s (timer every 60 s)")
    print(f"  CPU {used:.2f} s = {100 * used / wall:.2f}% of one core  (target < 1%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=4)  # best of 4: one slow write-back burst is noise
    p.add_argument("--rss-gb", type=float, nargs="+", default=[0.25, 2.0])
    p.add_argument("--latency-runs", type=int, default=20)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-syncd-"))
    try:
        bench_throughput(work / "tp", a.size_gb, a.repeats)
        bench_latency(work / "lat", a.latency_runs)
        bench_rss(work / "rss", a.rss_gb)
        bench_idle(work / "idle", a.idle_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
