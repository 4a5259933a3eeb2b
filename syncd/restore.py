"""Bring a committed checkpoint back from the remote, verified, or not at all.

    DIR/checkpoint-N.partial/   downloading; never resumed from
    DIR/checkpoint-N/           appears only after every byte matched its manifest

    DIR/.syncd/run.json             the run id restored from, so the daemon continues as that run
    DIR/.syncd/state/committed/     the restored files are known to equal their commit (freshness.py)
    DIR/.syncd/state/restored.json  steps restored here: never retired before training moves past them

The remote is untrusted: the manifest is schema-checked (no absolute paths, no
``..``, no duplicates), nothing beyond a file's declared size is accepted, and
every file's sha256 must match before the folder is renamed into place. Files
download in parallel (``RESTORE_WORKERS``), each hashed as it streams in.
When the newest checkpoint fails verification the next older one is tried.

A failure is not absence: "nothing committed" (NothingToRestore, exit 5) is said only
after every read succeeded; a listing or download that failed is a RemoteError (3),
and committed copies that all failed verification an IntegrityError (4).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import freshness, identity
from .checkpoints import MARKER, walk_files, write_checkpoint_marker
from .completeness import scan_stopped
from .errors import ConfigError, IntegrityError, NothingToRestore, RemoteError, SyncdError
from .fsutil import atomic_write_json, fsync_dir, read_json
from .hashing import CHUNK_BYTES, Digest, Hasher, hash_file, hashed_copy
from .manifest import MANIFEST_NAME, Manifest, ManifestFile
from .reconcile import remote_best
from .remote_state import UNREADABLE, Entry, RemoteIndex
from .remotes.base import Remote, join

RESCANS = 3  # another machine may prune while we restore: look again this often
RESTORE_WORKERS = 4  # files in flight: hides per-file latency, overlaps hashing with I/O

log = logging.getLogger(__name__)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, leave=True, dynamic_ncols=True)


def _download(remote: Remote, src: str, dest: Path, size: int, bar) -> Digest:
    """Stream one file; refuses more bytes than the manifest declared."""
    try:
        fin_cm = remote.open_read(src)
    except RemoteError as e:
        if remote.stat(src) is None:  # listed in the manifest, gone from the remote: damaged
            raise IntegrityError(f"{src} is missing on the remote") from None
        raise e
    # sha256 decides: an md5 beside it would only cost the slowest hash again.
    with Hasher(md5=False) as h, fin_cm as fin, open(dest, "xb", buffering=0) as fout:
        seen = 0

        def read() -> bytes:
            nonlocal seen
            chunk = fin.read(min(CHUNK_BYTES, size - seen + 1))
            seen += len(chunk)
            if seen > size:
                raise IntegrityError(f"{src} holds more than the {size} bytes its manifest declares")
            return chunk

        hashed_copy(read, fout.write, h, bar.update)
        os.fsync(fout.fileno())
    return h.digest()


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise IntegrityError(f"manifest path {rel!r} escapes the restore folder")
    return target


def matches_manifest(folder: Path, manifest: Manifest) -> bool:
    """Whether ``folder`` already holds exactly the manifest's files (sizes and sha256)."""
    return holds_files(folder, manifest.files)


def holds_files(folder: Path, files: Iterable[ManifestFile]) -> bool:
    """Whether ``folder`` holds each of ``files`` with its size and sha256."""
    local = {f.path: f.size for f in walk_files(folder)}
    for mf in files:
        if local.get(mf.path) != mf.size or hash_file(folder / mf.path).sha256 != mf.sha256:
            return False
    return True


def fetch(remote: Remote, run: str, entry: Entry, dest_root: Path, progress: bool) -> Path:
    """Download one committed checkpoint into ``dest_root/<base>``; IntegrityError on any mismatch."""
    manifest = entry.manifest
    assert manifest is not None
    return fetch_files(remote, [(join(run, entry.name), mf) for mf in manifest.files], dest_root, entry.base,
                       entry.step, progress, what=entry.name)


def fetch_files(remote: Remote, sources: list[tuple[str, ManifestFile]], dest_root: Path, base: str,
                step: int | None, progress: bool, what: str | None = None) -> Path:
    """Download ``(remote folder, manifest file)`` pairs into ``dest_root/<base>``, verified, or nothing.

    Everything lands in ``<base>.partial`` and is renamed into place only once every
    file matched its manifest; a checkpoint without our marker then gets one.
    """
    what = what or base
    target = dest_root / base
    if target.exists():
        if holds_files(target, [mf for _, mf in sources]):
            log.info("%s already present in %s and identical; nothing to do", what, dest_root)
            return target
        raise SyncdError(f"{target} exists and differs from the remote copy; move it away first")
    partial = dest_root / f"{base}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _check_space(dest_root, sum(mf.size for _, mf in sources))
        with _progress_bar(sum(mf.size for _, mf in sources), f"restore {base}", progress) as bar:
            def one(folder: str, mf: ManifestFile) -> None:
                dest = _inside(partial, mf.path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                got = _download(remote, join(folder, mf.path), dest, mf.size, bar)
                if got.size != mf.size:
                    raise IntegrityError(f"{folder}/{mf.path}: {got.size} bytes, manifest says {mf.size}")
                if got.sha256 != mf.sha256:
                    raise IntegrityError(f"{folder}/{mf.path}: checksum does not match its manifest")

            # Biggest first, so the long transfers overlap; the first failure stops the rest.
            ordered = sorted(sources, key=lambda x: -x[1].size)
            with ThreadPoolExecutor(max_workers=RESTORE_WORKERS, thread_name_prefix="syncd-restore") as pool:
                futures = [pool.submit(one, folder, mf) for folder, mf in ordered]
                try:
                    for fut in futures:
                        fut.result()
                except BaseException:
                    for fu in futures:
                        fu.cancel()
                    raise
        if not (partial / MARKER).exists() and step is not None:
            # Checkpoints of other trainers carry no marker; the restored copy is
            # verified, so say so, or it would look unsettled for a while.
            write_checkpoint_marker(partial, step)
        for d in sorted({p.parent for p in partial.rglob("*")} | {partial}, key=lambda p: -len(p.parts)):
            fsync_dir(d)
        os.rename(partial, target)
        fsync_dir(dest_root)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SyncdError(f"restore {base}: no space left in {dest_root}; nothing was changed") from None
        raise SyncdError(f"restore {base} into {dest_root}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def _check_space(dest_root: Path, need: int) -> None:
    free = shutil.disk_usage(dest_root).free
    if free < need:
        raise SyncdError(f"restore needs {need / 1e6:.1f} MB but {dest_root} has {free / 1e6:.1f} MB free; "
                         "nothing was changed")


def _refuse_if_newer_unreadable(snap, copies: list[Entry], step: int | None, remote: Remote, run: str) -> None:
    """A step that could not be read may be the newest (or the asked-for) commit: no guessing."""
    if snap.record_error is not None:
        raise RemoteError(f"could not read the run record of {run} on {remote.url}: {snap.record_error}")
    newest = copies[0].step if copies else None
    unreadable = [e for e in snap if e.owner == UNREADABLE and not e.is_final and e.step is not None
                  and (step is None and (newest is None or e.step >= newest) or e.step == step)]
    if unreadable:
        raise RemoteError(f"could not read {unreadable[0].name} on {remote.url} ({unreadable[0].error}); "
                          "not restoring an older step in its place")


def _claim_folder(dest_root: Path, run_id: str | None, run: str, url: str) -> None:
    """Carry the run id into the restore folder; one that belongs to another run is refused."""
    if run_id is None:
        return
    state_dir = dest_root / ".syncd"
    have = identity.read_local_record(state_dir)
    if have is not None and have != run_id:
        raise ConfigError(f"{dest_root} belongs to run {identity.short(have)}, not to run {identity.short(run_id)} "
                          f"of {url}: restore into another folder")
    if have is None:
        # Checkpoints of some other training there would be mirrored as this run's: refuse.
        theirs = [c.name for c in scan_stopped(dest_root) if c.complete]
        if theirs:
            raise ConfigError(f"{dest_root} holds checkpoints that are not from run {identity.short(run_id)} "
                              f"({', '.join(theirs[:3])}): restore into an empty folder")
        identity.write_local_record(state_dir, run_id, run, url)


def _pin(dest_root: Path, entry: Entry, path: Path) -> None:
    state_dir = dest_root / ".syncd"
    assert entry.manifest is not None
    freshness.record(state_dir, entry.base, path, entry.manifest, entry.name)
    pins_path = state_dir / "state" / "restored.json"
    pins = read_json(pins_path, default={})
    pins = pins if isinstance(pins, dict) else {}
    pins[entry.base] = time.time()
    atomic_write_json(pins_path, pins, durable=False)


def best_on_remote(remote: Remote, run: str, key: str | None = None) -> int:
    """The step the newest committed trainer_state.json names as best."""
    snap = RemoteIndex(remote, run, key).scan()
    copies = sorted((e for e in snap.restorable().values() if not e.is_final), key=lambda e: e.step or 0)
    if not copies:
        if snap.io_errors:
            raise RemoteError("cannot tell which checkpoint is best: " + "; ".join(snap.io_errors[:3]))
        raise NothingToRestore(f"nothing committed for run {run} on {remote.url}")
    newest = copies[-1]
    step = remote_best(remote, run, newest)
    if step is None:
        raise NothingToRestore(f"{newest.name}'s trainer_state.json names no best_model_checkpoint "
                               "(the Trainer sets it with metric_for_best_model or load_best_model_at_end)")
    return step


def restore(
    remote: Remote,
    run: str,
    dest_root: Path,
    *,
    step: int | None = None,
    best: bool = False,
    progress: bool = False,
    key: str | None = None,
) -> Path:
    """Newest (or the given, or with ``best`` the best) committed checkpoint into ``dest_root/checkpoint-N``.

    Without ``step``, a checkpoint that fails verification is reported and the next
    older committed one is tried; with ``step``, that one or an error. Raises
    NothingToRestore only when every read succeeded and nothing is committed.
    """
    if dest_root.exists() and not dest_root.is_dir():
        raise ConfigError(f"restore target {dest_root} is not a folder")
    if best:
        step = best_on_remote(remote, run, key)
    failures: list[str] = []
    tried: set[str] = set()
    for _ in range(RESCANS):
        snap = RemoteIndex(remote, run, key).scan()
        copies = sorted((e for e in snap.restorable().values() if not e.is_final),
                        key=lambda e: e.step or 0, reverse=True)
        if step is not None:
            copies = [e for e in copies if e.step == step]
        copies = [e for e in copies if e.name not in tried]
        _refuse_if_newer_unreadable(snap, copies, step, remote, run)
        if not copies:
            break
        vanished = False
        for entry in copies:
            tried.add(entry.name)
            try:
                try:
                    dest_root.mkdir(parents=True, exist_ok=True)
                    _claim_folder(dest_root, entry.manifest.run_id if entry.manifest else None, run, remote.url)
                except OSError as e:
                    raise ConfigError(f"cannot restore into {dest_root}: {e.strerror or e}") from None
                path = fetch(remote, run, entry, dest_root, progress)
            except (IntegrityError, RemoteError) as e:
                if remote.stat(join(run, entry.name, MANIFEST_NAME)) is None:
                    log.warning("%s was removed from the remote while it was restored; looking again", entry.name)
                    vanished = True
                    break
                if type(e) is RemoteError:  # a failed read: older steps are no answer to it
                    raise RemoteError(f"could not read {entry.name} from {remote.url}: {e}") from None
                failures.append(f"{entry.name}: {e}")
                if step is not None:
                    raise
                log.warning("%s failed verification (%s); falling back to the next older checkpoint", entry.name, e)
                continue
            if failures:
                log.warning("restored %s instead of the newer %s", entry.name,
                            ", ".join(f.split(":")[0] for f in failures))
            _pin(dest_root, entry, path)
            log.info("restored %s into %s", entry.name, path)
            return path
        if not vanished:
            break
    what = f"checkpoint-{step}" if step is not None else "checkpoint"
    if snap.io_errors:
        raise RemoteError(f"could not read the remote {remote.url} for run {run}: " + "; ".join(snap.io_errors[:3]))
    if failures:
        raise IntegrityError(f"no committed {what} of run {run} verified: {'; '.join(failures)}")
    foreign = [e for e in snap if e.committed and e.owner == "foreign"]
    invalid = [f"{e.name}: {e.error}" for e in snap if e.error and not e.suffix]
    hint = f" ({len(foreign)} committed by another run are not restored)" if foreign else ""
    hint += f" ({'; '.join(invalid[:3])})" if invalid else ""
    raise NothingToRestore(f"no committed {what} for run {run} on {remote.url}{hint}")
