"""The Drive backend for tests/remotes' conformance suite: a fresh fake Drive per test.

Listings lag far behind writes here (as Drive's may), so the suite also checks that
the remote never relies on a listing to see what it has just written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.remotes.base import Remote

from .fake_drive import FakeDrive
from .helpers_gdrive import CHUNK, REFRESH, write_user_creds


def gdrive_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Remote:
    from syncd.remotes.gdrive import GDriveRemote

    drive = FakeDrive()
    drive.add_refresh_token(REFRESH)
    drive.lag_s = 30.0
    drive.start()
    request.addfinalizer(drive.stop)  # after the suite's own remote.close()
    creds = write_user_creds(tmp_path / "gdrive-creds.json", drive)
    return GDriveRemote("gdrive://conformance", credentials=str(creds), root_url=drive.url,
                        chunk_bytes=CHUNK, state_dir=tmp_path / "gdrive-uploads",
                        backoff_base_s=0.01, timeout_s=10.0)
