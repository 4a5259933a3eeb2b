"""Backends for the conformance suite. Each factory builds a fresh, empty remote.

A new backend joins the suite by adding its factory to ``FACTORIES``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.remotes.base import Capabilities, Remote


def _local(tmp_path: Path, request) -> Remote:
    from syncd.remotes.local import LocalRemote

    return LocalRemote(tmp_path / "remote")


def _memory(tmp_path: Path, request) -> Remote:
    from syncd.remotes.fsspec_remote import FsspecRemote

    return FsspecRemote(f"memory://conformance-{uuid.uuid4().hex}/root")


def _s3(tmp_path: Path, request) -> Remote:
    from syncd.remotes.fsspec_remote import FsspecRemote

    bucket = request.getfixturevalue("s3_bucket")
    return FsspecRemote(f"s3://{bucket}/prefix")


FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Remote]] = {
    "local": _local,
    "memory": _memory,
    "s3": _s3,
}

if (Path(__file__).parents[1] / "gdrive" / "conformance.py").exists():
    # The Drive backend brings its own loopback server.
    from tests.gdrive.conformance import gdrive_factory

    FACTORIES["gdrive"] = gdrive_factory


def _declared(kind: str) -> Capabilities:
    """The capabilities a backend's class declares, without building one."""
    if kind == "local":
        from syncd.remotes.local import LocalRemote

        return LocalRemote.capabilities
    if kind == "gdrive":
        from syncd.remotes.gdrive import GDriveRemote

        return GDriveRemote.capabilities
    from syncd.remotes.fsspec_remote import FsspecRemote

    return FsspecRemote.capabilities


def _remote(request, tmp_path) -> Iterator[Remote]:
    r = FACTORIES[request.param](tmp_path, request)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(params=sorted(FACTORIES))
def remote(request, tmp_path) -> Iterator[Remote]:
    yield from _remote(request, tmp_path)


@pytest.fixture(params=sorted(k for k in FACTORIES if _declared(k).rename))
def renaming_remote(request, tmp_path) -> Iterator[Remote]:
    """Every backend that declares ``rename``: the suite's rename clauses run on these only."""
    yield from _remote(request, tmp_path)


@pytest.fixture(params=sorted(k for k in FACTORIES if _declared(k).quota))
def quota_remote(request, tmp_path) -> Iterator[Remote]:
    yield from _remote(request, tmp_path)
