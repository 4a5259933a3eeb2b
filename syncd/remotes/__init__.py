"""Remotes: one protocol (``base``), backends behind a registry (``registry``).

``open_remote(cfg)`` picks the backend from ``cfg.remote_url``'s scheme; see
``registry`` for which scheme goes where and which config keys each backend owns.
"""

from __future__ import annotations

from .base import Capabilities, Quota, Remote, RemoteFile
from .registry import RemoteSettings, normalise_url, open_backend, scheme_of

__all__ = ["Capabilities", "Quota", "Remote", "RemoteFile", "RemoteSettings", "normalise_url", "open_remote",
           "scheme_of"]


def open_remote(cfg: RemoteSettings) -> Remote:
    """Build the backend for ``cfg.remote_url``; raises ConfigError when none is set."""
    from ..deleter import audited

    return audited(open_backend(cfg))
