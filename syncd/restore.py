"""Bring a committed checkpoint back from the remote, verified, or not at all.

    DIR/checkpoint-N.partial/   downloading; never resumed from
    DIR/checkpoint-N/           appears only after every byte matched its manifest

The remote is untrusted: the manifest is schema-checked (no absolute paths, no
``..``, no duplicates), nothing beyond a file's declared size is accepted, and
every file's sha256 and md5 must match before the folder is renamed into place.
When the newest checkpoint fails verification the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .checkpoints import MARKER, walk_files, write_checkpoint_marker
from .errors import IntegrityError, NothingToRestore, RemoteError, SyncdError
from .fsutil import fsync_dir
from .manifest import Manifest
from .remote_state import RemoteCheckpoint, RemoteIndex
from .remotes.base import CHUNK_BYTES, Digest, Hasher, Remote, hash_file, join

log = logging.getLogger(__name__)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, leave=True, dynamic_ncols=True)


def _download(remote: Remote, src: str, dest: Path, size: int, bar) -> Digest:
    """Stream one file; refuses more bytes than the manifest declared."""
    with Hasher() as h, remote.open_read(src) as fin, open(dest, "xb") as fout:
        while True:
            chunk = fin.read(min(CHUNK_BYTES, size - h.size + 1))
            if not chunk:
                break
            h.update(chunk)
            if h.size > size:
                raise IntegrityError(f"{src} holds more than the {size} bytes its manifest declares")
            fout.write(chunk)
            bar.update(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    return h.digest()


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise IntegrityError(f"manifest path {rel!r} escapes the restore folder")
    return target


def matches_manifest(folder: Path, manifest: Manifest) -> bool:
    """Whether ``folder`` already holds exactly the manifest's files (sizes and sha256)."""
    local = {f.path: f.size for f in walk_files(folder)}
    for mf in manifest.files:
        if local.get(mf.path) != mf.size or hash_file(folder / mf.path).sha256 != mf.sha256:
            return False
    return True


def fetch(remote: Remote, run: str, entry: RemoteCheckpoint, dest_root: Path, progress: bool) -> Path:
    """Download one committed checkpoint into ``dest_root/<name>``; IntegrityError on any mismatch."""
    manifest = entry.manifest
    assert manifest is not None
    target = dest_root / entry.name
    if target.exists():
        if matches_manifest(target, manifest):
            log.info("%s already present in %s and identical; nothing to do", entry.name, dest_root)
            return target
        raise SyncdError(f"{target} exists and differs from the remote copy; move it away first")
    partial = dest_root / f"{entry.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with _progress_bar(manifest.size_bytes, f"restore {entry.name}", progress) as bar:
            for mf in manifest.files:
                dest = _inside(partial, mf.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                got = _download(remote, join(run, entry.name, mf.path), dest, mf.size, bar)
                if got.size != mf.size:
                    raise IntegrityError(f"{entry.name}/{mf.path}: {got.size} bytes, manifest says {mf.size}")
                if got.sha256 != mf.sha256 or got.md5 != mf.md5:
                    raise IntegrityError(f"{entry.name}/{mf.path}: checksum does not match its manifest")
        if not (partial / MARKER).exists() and entry.step is not None:
            # Checkpoints of other trainers carry no marker; the restored copy is
            # verified, so say so, or it would look unsettled for a while.
            write_checkpoint_marker(partial, entry.step)
        for d in sorted({p.parent for p in partial.rglob("*")} | {partial}, key=lambda p: -len(p.parts)):
            fsync_dir(d)
        os.rename(partial, target)
        fsync_dir(dest_root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def restore(
    remote: Remote,
    run: str,
    dest_root: Path,
    *,
    step: int | None = None,
    progress: bool = False,
    key: str | None = None,
) -> Path:
    """Newest (or the given) committed checkpoint into ``dest_root/checkpoint-N``.

    Without ``step``, a checkpoint that fails verification is reported and the next
    older committed one is tried; with ``step``, that one or an error.
    """
    scanned = RemoteIndex(remote, run, key).scan()
    entries = [e for e in scanned if e.committed and not e.is_final]
    entries.sort(key=lambda e: e.step or 0, reverse=True)
    invalid = [f"{e.name}: {e.error}" for e in scanned if e.error and not e.partial]
    why = f" ({'; '.join(invalid)})" if invalid else ""
    if step is not None:
        entries = [e for e in entries if e.step == step]
        if not entries:
            raise NothingToRestore(f"no committed checkpoint-{step} for run {run} on {remote.url}{why}")
    if not entries:
        raise NothingToRestore(f"no committed checkpoint for run {run} on {remote.url}{why}")
    dest_root.mkdir(parents=True, exist_ok=True)
    failures = []
    for entry in entries:
        try:
            path = fetch(remote, run, entry, dest_root, progress)
        except (IntegrityError, RemoteError) as e:
            failures.append(f"{entry.name}: {e}")
            if step is not None:
                raise
            log.warning("%s failed verification (%s); falling back to the next older checkpoint", entry.name, e)
            continue
        if failures:
            log.warning("restored %s instead of the newer %s", entry.name, ", ".join(f.split(":")[0] for f in failures))
        log.info("restored %s into %s", entry.name, path)
        return path
    raise NothingToRestore(f"no committed checkpoint of run {run} verified: {'; '.join(failures)}")
