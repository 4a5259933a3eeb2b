"""Shared fixtures: config files, real syncd subprocesses, a moto S3 server.

Every process, thread and server started here is stopped at teardown, also when
the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def write_config(path: Path, **keys) -> Path:
    path.write_text(json.dumps(keys, indent=1))
    return path


def syncd(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one syncd command to completion (its deletes audited into ``cwd/deletes.jsonl``)."""
    return subprocess.run([PY, "-m", "syncd", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "SYNCD_DELETE_AUDIT": str(Path(cwd) / "deletes.jsonl"),
                                                **(env or {})})


class Procs:
    """Starts subprocesses and kills whatever is left of them at teardown.

    Every process runs with ``SYNCD_DELETE_AUDIT``: its remotes record each delete and
    whether syncd's deleter permitted it (syncd/deleter.py); teardown fails the test on
    any delete the plan did not justify.
    """

    def __init__(self, audit: Path | None = None) -> None:
        self.started: list[subprocess.Popen] = []
        self.audit = audit

    def start(self, cmd: list[str], *, cwd: Path, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        audit = {"SYNCD_DELETE_AUDIT": str(self.audit)} if self.audit else {}
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **audit, **(env or {})},
                                start_new_session=True)
        if log:
            out.close()
        self.started.append(proc)
        return proc

    def syncd_run(self, config: Path, *extra: str, cwd: Path, env: dict | None = None,
                  ready: bool = True) -> subprocess.Popen:
        """`syncd run` in the background; with ``ready``, returns once its first pass is done."""
        proc = self.start([PY, "-m", "syncd", "run", str(config), *extra], cwd=cwd, env=env,
                          log=cwd / f"syncd-{len(self.started)}.log")
        if ready:
            out = Path(json.loads(Path(config).read_text())["output_dir"])
            status = (cwd / out if not out.is_absolute() else out) / ".syncd" / "status.json"

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"syncd exited with {proc.returncode} before it was ready")
                try:
                    return json.loads(status.read_text()).get("pid") == proc.pid
                except (OSError, ValueError):
                    return False

            wait_for(up, 60, what="syncd to be ready")
        return proc

    def hf_train(self, output_dir: Path, *extra: str, cwd: Path) -> subprocess.Popen:
        return self.start([PY, str(REPO / "tests" / "helpers" / "hf_train.py"), str(output_dir), *extra],
                          cwd=cwd, log=cwd / f"train-{len(self.started)}.log")

    def stop_all(self) -> None:
        for p in self.started:
            if p.poll() is None:
                kill_tree(p.pid)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def one_thread():
    """In-process torch runs use one thread, like the subprocesses: the same float results,
    and the two cores stay shared with the rest of the suite."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group, and every descendant, even those in sessions of
    their own (torchrun starts its workers so: killing its group alone leaves them running)."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def procs(tmp_path_factory) -> Iterator[Procs]:
    from syncd.deleter import unjustified

    p = Procs(tmp_path_factory.mktemp("audit") / "deletes.jsonl")
    try:
        yield p
    finally:
        p.stop_all()
    bad = unjustified(p.audit)
    assert not bad, f"syncd deleted what no plan justified: {bad[:5]}"


def stop_gracefully(proc: subprocess.Popen, timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[dict]:
    """moto's S3 server on loopback; yields the environment that points clients at it."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
           "AWS_EC2_METADATA_DISABLED": "true"}

    def up() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except Exception as e:  # noqa: BLE001
            return getattr(e, "code", None) is not None

    try:
        wait_for(up, timeout=60, what="moto server")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield {"env": env, "url": url}
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh bucket for one test; returns its name."""
    import boto3

    name = "t-" + str(abs(hash(request.node.nodeid)) % 10**10)
    boto3.client("s3", endpoint_url=s3_server["url"]).create_bucket(Bucket=name)
    return name
