"""Fixtures: a fake Drive on loopback (always stopped), credential files, remotes on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .fake_drive import FakeDrive
from .helpers_gdrive import CHUNK, REFRESH, write_user_creds


@pytest.fixture
def drive() -> Iterator[FakeDrive]:
    fake = FakeDrive()
    fake.add_refresh_token(REFRESH)
    with fake:
        yield fake


@pytest.fixture
def creds(tmp_path: Path, drive: FakeDrive) -> Path:
    return write_user_creds(tmp_path / "gdrive-creds.json", drive)


@pytest.fixture
def make_remote(drive: FakeDrive, creds: Path, tmp_path: Path) -> Iterator[Callable[..., object]]:
    from syncd.remotes.gdrive import GDriveRemote

    made: list[GDriveRemote] = []

    def make(url: str = "gdrive://backups", **kw: object) -> GDriveRemote:
        args: dict[str, object] = {
            "credentials": str(creds), "root_url": drive.url, "chunk_bytes": CHUNK,
            "state_dir": tmp_path / "state", "backoff_base_s": 0.01, "timeout_s": 5.0,
        }
        args.update(kw)
        r = GDriveRemote(url, **args)  # type: ignore[arg-type]
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def remote(make_remote):
    return make_remote()
