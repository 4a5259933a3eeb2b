"""The output folder and the remote run folder must not contain one another.

Training into a mounted Drive while backing up to its parent (``output_dir``
``MyDrive/tess_out``, remote ``MyDrive``, run name ``tess_out``) makes the two the same
folder: every local checkpoint would then look like an uncommitted remote upload.
Paths are compared after resolving symlinks, and through bind mounts (the same
folder under two paths has one device and inode, which the OS reports).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError
from .remotes import scheme_of


def _chain(path: Path) -> list[tuple[Path, tuple[int, int]]]:
    """``path`` and each of its ancestors that exists, with its (device, inode)."""
    out = []
    for p in [path, *path.parents]:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append((p, (st.st_dev, st.st_ino)))
    return out


def _nested(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def overlapping(output_dir: Path, run_dir: Path) -> bool:
    a, b = Path(output_dir).resolve(), Path(run_dir).resolve()
    if _nested(a, b):
        return True
    ids = {ident: p for p, ident in _chain(a)}
    for q, ident in _chain(b):
        p = ids.get(ident)
        if p is not None and _nested(q / a.relative_to(p), b):
            return True
    return False


def check_overlap(output_dir: Path, remote_url: str | None, run_name: str) -> None:
    """ConfigError naming both folders when a folder remote's run folder overlaps ``output_dir``."""
    if not remote_url or scheme_of(remote_url) is not None:
        return
    run_dir = Path(remote_url) / run_name
    if overlapping(output_dir, run_dir):
        raise ConfigError(f"output_dir {output_dir} and the remote run folder {run_dir} overlap (one contains "
                          "the other): back up to a folder outside output_dir, or set another run_name")
