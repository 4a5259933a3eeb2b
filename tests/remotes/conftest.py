"""Backends for the conformance suite. Each factory builds a fresh, empty remote.

A factory returns the remote and its quota truth: a function that says, from outside
the backend, what ``quota()`` must report now (``None`` for a backend without the
``quota`` capability). A new backend joins the suite by adding its factory to
``FACTORIES``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.remotes.base import Quota, Remote

# What quota() must report: (the quota, whether "used" must match exactly). A shared
# local disk is written by other processes meanwhile, so only its limit is exact.
QuotaTruth = Callable[[], "tuple[Quota, bool] | None"]
Factory = Callable[[Path, pytest.FixtureRequest], "tuple[Remote, QuotaTruth]"]


def _local(tmp_path: Path, request) -> tuple[Remote, QuotaTruth]:
    from syncd.remotes.local import LocalRemote

    root = tmp_path / "remote"

    def truth() -> tuple[Quota, bool]:
        du = shutil.disk_usage(root)  # usable size: used + what we may still write
        return Quota(du.used + du.free, du.used), False

    return LocalRemote(root), truth


def _memory(tmp_path: Path, request) -> tuple[Remote, QuotaTruth]:
    from syncd.remotes.fsspec_remote import FsspecRemote

    return FsspecRemote(f"memory://conformance-{uuid.uuid4().hex}/root"), lambda: None


def _s3(tmp_path: Path, request) -> tuple[Remote, QuotaTruth]:
    from syncd.remotes.fsspec_remote import FsspecRemote

    bucket = request.getfixturevalue("s3_bucket")
    return FsspecRemote(f"s3://{bucket}/prefix"), lambda: None


FACTORIES: dict[str, Factory] = {
    "local": _local,
    "memory": _memory,
    "s3": _s3,
}

if (Path(__file__).parents[1] / "gdrive" / "conformance.py").exists():
    # The Drive backend brings its own loopback server.
    from tests.gdrive.conformance import gdrive_factory

    FACTORIES["gdrive"] = gdrive_factory


@pytest.fixture(params=sorted(FACTORIES))
def made(request, tmp_path) -> Iterator[tuple[Remote, QuotaTruth]]:
    remote, truth = FACTORIES[request.param](tmp_path, request)
    try:
        yield remote, truth
    finally:
        remote.close()


@pytest.fixture
def remote(made) -> Remote:
    return made[0]
