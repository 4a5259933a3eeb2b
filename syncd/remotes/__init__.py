"""From a ``gdrive_backup_dir`` value to a backend.

- a plain path or ``file://``  -> ``LocalRemote`` (a mounted Drive is just a folder)
- ``gdrive://``                -> ``GDriveRemote`` (the Drive API through pydrive2)
- any other fsspec protocol    -> ``FsspecRemote`` (``s3://``, ``gs://``, ``memory://``)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Capabilities, Digest, Quota, Remote, RemoteFile

if TYPE_CHECKING:
    from ..config import SyncConfig

__all__ = ["Capabilities", "Digest", "Quota", "Remote", "RemoteFile", "normalise_url", "open_remote"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(url: str) -> str | None:
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


def normalise_url(url: str, base: Path) -> str:
    """Absolute path for folders, the URL untouched otherwise; unknown schemes are refused."""
    scheme = scheme_of(url)
    if scheme is None:
        return str((base / Path(url).expanduser()).resolve())
    if scheme == "file":
        return str(Path(url[len("file://"):]).resolve())
    if scheme == "gdrive":
        return url
    import fsspec

    if scheme not in fsspec.available_protocols():
        raise ConfigError(f"unsupported remote URL scheme {scheme}:// in gdrive_backup_dir")
    return url


def open_remote(cfg: SyncConfig) -> Remote:
    """Build the backend for ``cfg.remote_url``; raises ConfigError when none is set."""
    from ..deleter import audited

    return audited(_open(cfg))


def _open(cfg: SyncConfig) -> Remote:
    url = cfg.remote_url
    if not url:
        raise ConfigError("no remote configured: set gdrive_backup_dir in the config")
    scheme = scheme_of(url)
    if scheme is None:
        from .local import LocalRemote

        return LocalRemote(Path(url))
    if scheme == "gdrive":
        from .gdrive import GDriveRemote

        return GDriveRemote.from_config(url, cfg)
    from .fsspec_remote import FsspecRemote

    return FsspecRemote(url)
