"""Whether a local checkpoint (or the final model) holds the bytes of its committed copy.

    output_dir/.syncd/state/committed/<name>.json
      {"folder": "checkpoint-60.v2", "files": {"model.safetensors": [size, mtime_ns, inode], ...}}

The one answer the daemon, ``syncd wait``/``status`` and restore share. Sizes are
compared first (free). Where they match, the record above says whether the files
are still the ones known to equal that remote folder; when it is missing or the
files moved (a re-save of the same step, a restore on a fresh VM), every file is
hashed once against the manifest's sha256 and the record is written again. A
restored checkpoint thus costs one read and is never uploaded again, and a step
saved again with other bytes of the same sizes is never taken for its old copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .checkpoints import FINAL_MARKER, MARKER, LocalFile
from .fsutil import atomic_write_json, read_json
from .hashing import sha256_stream
from .manifest import Manifest

# Written by restore or by us when a copy lacks them: never a difference by themselves.
_OUR_MARKERS = (MARKER, FINAL_MARKER)


def _record_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "state" / "committed" / f"{name}.json"


def _compared(files: Iterable[LocalFile], manifest: Manifest, superset: bool = False) -> dict[str, int]:
    listed = {f.path for f in manifest.files}
    if superset:  # a node's part inside a folder restored from every part (parts.py)
        return {f.path: f.size for f in files if f.path in listed and f.path not in _OUR_MARKERS}
    return {f.path: f.size for f in files if f.path in listed or f.path not in _OUR_MARKERS}


def _stamps(root: Path, paths: Iterable[str]) -> dict[str, list[int]] | None:
    out = {}
    for rel in paths:
        try:
            st = os.stat(root / rel)
        except OSError:
            return None
        out[rel] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def record(state_dir: Path, name: str, root: Path, manifest: Manifest, folder: str) -> None:
    """Note that the files under ``root`` are the bytes of remote ``folder`` (just verified)."""
    stamps = _stamps(root, [f.path for f in manifest.files])
    if stamps is not None:
        _write(state_dir, name, {"folder": folder, "files": stamps})


def _write(state_dir: Path, name: str, doc: dict) -> None:
    try:
        atomic_write_json(_record_path(state_dir, name), doc, durable=False)
    except OSError:
        pass  # only a cache: without it the next look hashes again


def forget(state_dir: Path, name: str) -> None:
    _record_path(state_dir, name).unlink(missing_ok=True)


def same_as_committed(state_dir: Path, name: str, root: Path, files: Iterable[LocalFile],
                      manifest: Manifest, folder: str, superset: bool = False) -> bool:
    """True when the local files are byte for byte the committed copy in ``folder``.

    ``superset`` (several nodes, parts.py): the local folder may hold other nodes' files
    as well, and its marker is its own; the committed part's other files must match.
    """
    files = list(files)
    wanted = {f.path: f.size for f in manifest.files if not (superset and f.path in _OUR_MARKERS)}
    if _compared(files, manifest, superset) != wanted:
        return False
    stamps = _stamps(root, [f.path for f in manifest.files])
    if stamps is None:
        return True  # deleted under us (the trainer's rotation): nothing left to send again
    rec = read_json(_record_path(state_dir, name), default=None)
    if isinstance(rec, dict) and rec.get("folder") == folder and rec.get("files") == stamps:
        return True
    for mf in manifest.files:
        if superset and mf.path in _OUR_MARKERS:
            continue
        try:
            with open(root / mf.path, "rb", buffering=0) as fh:
                if sha256_stream(fh)[1] != mf.sha256:
                    return False
        except OSError:
            return True  # deleted while we read it, or unreadable: nothing we could send again
    _write(state_dir, name, {"folder": folder, "files": stamps})
    return True
