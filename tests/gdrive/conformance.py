"""The Drive backend for tests/remotes' conformance suite: a fresh fake Drive per test.

Listings lag far behind writes here (as Drive's may), so the suite also checks that
the remote never relies on a listing to see what it has just written. The quota
truth is the fake server's own account: its limit, and the bytes it stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.remotes.base import Quota, Remote

from .fake_drive import FakeDrive
from .helpers_gdrive import CHUNK, REFRESH, write_user_creds


def gdrive_factory(tmp_path: Path, request: pytest.FixtureRequest):
    from syncd.remotes.gdrive import GDriveRemote

    drive = FakeDrive()
    drive.add_refresh_token(REFRESH)
    drive.lag_s = 30.0
    drive.quota_limit = 10 * 1024**3
    drive.start()
    request.addfinalizer(drive.stop)  # after the suite's own remote.close()
    creds = write_user_creds(tmp_path / "gdrive-creds.json", drive)
    remote: Remote = GDriveRemote("gdrive://conformance", credentials=str(creds), root_url=drive.url,
                                  chunk_bytes=CHUNK, state_dir=tmp_path / "gdrive-uploads",
                                  backoff_base_s=0.01, timeout_s=10.0)

    def truth() -> tuple[Quota, bool]:
        return Quota(drive.quota_limit, drive.used_bytes(), drive.trash_bytes()), True

    return remote, truth
