"""From a ``gdrive_backup_dir`` value to the backend that serves it.

    a plain path, file://   local     LocalRemote: a folder (a mounted Drive is one)
    gdrive://               gdrive    GDriveRemote: the Drive API through pydrive2
    s3://, gs://, memory:// fsspec    FsspecRemote: any protocol fsspec knows

Each ``Backend`` names the schemes it serves, the config keys it reads (with their
specs, so config validation collects them here and ``syncd/config.py`` lists none of
them), how its URLs are written down, and how to open one. Backend modules are
imported only when a remote is opened: checking a config never imports pydrive2 or
s3fs. This module imports nothing from ``syncd.config``: the config imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config_check import Spec
from ..errors import ConfigError
from . import gdrive_options

if TYPE_CHECKING:
    from .base import Remote

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RemoteSettings(Protocol):
    """What opening a remote reads from the config (``SyncConfig`` has all of it)."""

    remote_url: str | None
    remote_options: Mapping[str, Any]  # every backend's option keys, validated
    delete_mode: str

    @property
    def state_dir(self) -> Path: ...


@dataclass(frozen=True)
class Backend:
    name: str
    accepts: Callable[[str | None], bool]  # the URL's scheme (None: a plain path)
    open: Callable[[str, RemoteSettings], Remote]
    normalise: Callable[[str, Path], str] = lambda url, base: url  # noqa: E731
    options: Mapping[str, Spec] = field(default_factory=dict)


def scheme_of(url: str) -> str | None:
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else None


# -- the built-in backends ----------------------------------------------------
def _local_path(url: str, base: Path) -> str:
    if scheme_of(url) == "file":
        return str(Path(url[len("file://"):]).resolve())
    return str((base / Path(url).expanduser()).resolve())


def _open_local(url: str, settings: RemoteSettings) -> Remote:
    from .local import LocalRemote

    return LocalRemote(Path(url))


def _open_gdrive(url: str, settings: RemoteSettings) -> Remote:
    from .gdrive import GDriveRemote

    return GDriveRemote.from_config(url, settings)


def _fsspec_knows(scheme: str | None) -> bool:
    if scheme is None:
        return False
    import fsspec

    return scheme in fsspec.available_protocols()


def _open_fsspec(url: str, settings: RemoteSettings) -> Remote:
    from .fsspec_remote import FsspecRemote

    return FsspecRemote(url)


_BACKENDS: list[Backend] = [
    Backend("local", lambda s: s in (None, "file"), _open_local, normalise=_local_path),
    Backend("gdrive", lambda s: s == "gdrive", _open_gdrive, options=gdrive_options.OPTIONS),
    Backend("fsspec", _fsspec_knows, _open_fsspec),  # last: it claims every scheme fsspec knows
]


def register(backend: Backend) -> None:
    """Add a backend ahead of the fsspec catch-all; its option keys must be new."""
    taken = option_specs()
    clash = sorted(k for k in backend.options if k in taken)
    if clash:
        raise ValueError(f"backend {backend.name}: option key {clash[0]} is already declared")
    _BACKENDS.insert(len(_BACKENDS) - 1, backend)


def backends() -> tuple[Backend, ...]:
    return tuple(_BACKENDS)


def backend_for(url: str) -> Backend:
    scheme = scheme_of(url)
    for b in _BACKENDS:
        if b.accepts(scheme):
            return b
    raise ConfigError(f"unsupported remote URL scheme {scheme}:// in gdrive_backup_dir")


def normalise_url(url: str, base: Path) -> str:
    """Absolute path for folders, the URL untouched otherwise; unknown schemes are refused."""
    return backend_for(url).normalise(url, base)


def option_specs() -> dict[str, Spec]:
    """Every backend's own config keys: the config validates all of them, whichever is used."""
    return {k: spec for b in _BACKENDS for k, spec in b.options.items()}


def open_backend(settings: RemoteSettings) -> Remote:
    url = settings.remote_url
    if not url:
        raise ConfigError("no remote configured: set gdrive_backup_dir in the config")
    return backend_for(url).open(url, settings)
