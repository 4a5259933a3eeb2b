"""The config keys the Google Drive remote (``gdrive://``) reads, declared by the backend.

Kept apart from ``gdrive.py`` so that validating a config never imports pydrive2 or
googleapiclient: the registry collects these specs with every other backend's, and
``GDriveOptions.of`` reads the validated values when a Drive remote is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config_check import Spec

MIB = 1024 * 1024

OPTIONS: dict[str, Spec] = {
    # A JSON file: OAuth user credentials saved by `syncd auth`, or a service account.
    "syncd_gdrive_credentials": Spec(str, None, nullable=True, non_empty=True),
    # A folder id (a Shared Drive's, for service accounts) to resolve the URL under; default: My Drive.
    "syncd_gdrive_root_id": Spec(str, None, nullable=True, non_empty=True),
    # Another API endpoint (a test server); default: Google's.
    "syncd_gdrive_root_url": Spec(str, None, nullable=True, non_empty=True),
    # Resumable upload chunk; Drive takes multiples of 256 KiB only.
    # At most 1 GiB: the chunk is held in memory.
    "syncd_gdrive_chunk_mb": Spec(float, 8.0, minimum=0.25, maximum=1024.0, multiple_of=0.25, why="(256 KiB)"),
}


@dataclass(frozen=True)
class GDriveOptions:
    credentials: str | None
    root_id: str | None
    root_url: str | None
    chunk_bytes: int

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> GDriveOptions:
        """From validated values (``SyncConfig.remote_options``); a missing key takes its default."""
        def get(key: str) -> Any:
            return options.get(key, OPTIONS[key].default)

        return cls(get("syncd_gdrive_credentials"), get("syncd_gdrive_root_id"), get("syncd_gdrive_root_url"),
                   int(get("syncd_gdrive_chunk_mb") * MIB))
