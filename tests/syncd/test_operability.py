"""What an operator sees: the HTTP status and metrics endpoint, per-checkpoint errors."""

from __future__ import annotations

import json
import urllib.request

from tests.conftest import free_port, stop_gracefully, syncd, wait_for
from tests.syncd.test_e2e_folder import make_config


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def metrics(port: int) -> dict[str, float]:
    out = {}
    for line in get(port, "/metrics").splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name] = float(value)
    return out


def test_http_status_and_prometheus_metrics(tmp_path, procs):
    port = free_port()
    cfg = make_config(tmp_path, syncd_http_port=port)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert get(port, "/healthz") == "ok\n"
    train = procs.hf_train(tmp_path / "out", "--max-steps", "10", "--save-steps", "5", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    wait_for(lambda: metrics(port).get("syncd_commits_total") == 2, 20, what="two commits in the metrics")
    m = metrics(port)
    sent = sum(p.stat().st_size for n in ("checkpoint-5", "checkpoint-10")
               for p in (tmp_path / "out" / n).rglob("*") if p.is_file())
    assert m["syncd_up"] == 1 and m["syncd_uploaded_bytes_total"] == sent
    wait_for(lambda: metrics(port).get("syncd_lag_steps") == 0, 20, what="lag back to zero")
    assert metrics(port)["syncd_newest_committed_step"] == 10
    status = json.loads(get(port, "/status"))
    assert status["pid"] == daemon.pid and status["committed"] == ["checkpoint-10", "checkpoint-5"]
    human = syncd("status", str(cfg), cwd=tmp_path).stdout
    assert "checkpoint-10" in human and "committed" in human
    assert stop_gracefully(daemon) == 0


def test_a_failing_checkpoint_shows_its_error_then_recovers(tmp_path, procs):
    cfg = make_config(tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "5", "--save-steps", "5", cwd=tmp_path)
    assert train.wait(120) == 0
    # Something else took the upload's place on the remote: every attempt fails.
    blocker = tmp_path / "remote" / "run" / "checkpoint-5.partial"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    daemon = procs.syncd_run(cfg, cwd=tmp_path)

    def row():
        s = json.loads(syncd("status", str(cfg), "--json", cwd=tmp_path).stdout)
        return next((r for r in s["checkpoints"] if r["name"] == "checkpoint-5" and r.get("error")), None)

    failing = wait_for(row, 30, what="the error to show in status")
    assert "upload failed" in failing["error"] and failing["remote"] != "committed"
    assert "upload failed" in syncd("status", str(cfg), cwd=tmp_path).stdout
    blocker.unlink()  # the remote is healthy again: the retry timer converges by itself
    wait_for(lambda: (tmp_path / "remote" / "run" / "checkpoint-5" / "syncd-manifest.json").exists(), 60,
             what="the retry to commit")
    wait_for(lambda: row() is None, 20, what="the error to clear")
    assert stop_gracefully(daemon) == 0


def test_no_worker_dies_silently(tmp_path, procs):
    # An unexpected exception is injected once into every worker thread of a real daemon:
    # each is logged with its traceback, counted in status and /metrics, and carries on.
    from tests.syncd.test_safety import ckpt

    port = free_port()
    cfg = make_config(tmp_path, syncd_http_port=port, syncd_interval_seconds=0.5)
    workers = ("watcher", "reconcile", "uploader", "disk", "clock")
    procs.syncd_run(cfg, cwd=tmp_path, env={"SYNCD_RAISE_AT": ",".join(workers)}, ready=False)
    wait_for(lambda: (tmp_path / "out" / ".syncd" / "status.json").exists(), 60, what="the daemon up")
    ckpt(tmp_path / "out", 5)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    ckpt(tmp_path / "out", 10)  # and it keeps working afterwards
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0

    def counted() -> dict:
        m = metrics(port)
        return {w: m.get(f'syncd_worker_errors_total{{worker="{w}"}}') for w in workers}

    wait_for(lambda: all(v == 1 for v in counted().values()), 30, what="every worker's error counted")
    status = json.loads(get(port, "/status"))
    assert status["worker_errors"] == dict.fromkeys(workers, 1)
    log = (tmp_path / "syncd-0.log").read_text()
    assert log.count("Traceback") >= len(workers) and "injected fault in the uploader worker" in log
