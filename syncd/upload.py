"""Upload one staged checkpoint: send, verify, commit.

Per-checkpoint resume state, a journal with one line appended per verified file::

    output_dir/.syncd/state/uploads/checkpoint-500.jsonl
      {"name": "checkpoint-500", "folder": "run/checkpoint-500.partial"}
      {"path": "model.safetensors", "size": .., "mtime_ns": .., "md5": .., "sha256": ..}
      ...

Appending keeps the cost per file constant (a sharded checkpoint has 10,000 of
them); the journal is compacted atomically when an upload (re)starts. A file is
sent again only when the journal does not know it, its staged copy changed, or
the remote lost it. A torn last line, stale or corrupt state: a warning and a redo.

An upload writes its claim (``syncd-upload.json``, this run's id) into the folder
before any other byte, so a folder left by a killed upload is provably ours. Commit =
write ``syncd-manifest.json`` (with the run id) last; on remotes that rename
atomically the folder is then renamed from ``<name>.partial`` to ``<name>``, where
``<name>`` is ``checkpoint-N`` or, for a step saved again with other bytes, the next
free version ``checkpoint-N.vK`` (remote_state.py). Nothing is ever moved aside or
overwritten at a committed name.

No torn files: each file is stat'ed before and after it is read (size, mtime and
ctime); a file that changed meanwhile aborts the checkpoint's upload with
``SourceChanged``, and every file is checked again just before the commit. (ctime
also moves when the trainer's rotation unlinks the other name of a hard-linked
file; a moved ctime with a changed link count and equal size and mtime is that.)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import remote_state, verify
from .checkpoints import LocalFile, walk_files
from .errors import Cancelled, IntegrityError, QuotaError, RemoteError, SourceChanged
from .faults import crash_point
from .fsutil import atomic_write_bytes
from .hashing import Digest, sha256_stream
from .identity import read_remote_owner, short
from .manifest import MANIFEST_NAME, Manifest, build_manifest
from .remote_state import (
    RemoteIndex,
    folder_name,
    read_manifest,
)
from .remotes.base import Remote, join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadJob:
    name: str  # "checkpoint-N" or "final"
    step: int | None
    staged: Path
    version: int = 1  # the committed name is checkpoint-N, or checkpoint-N.vK for K > 1

    @property
    def target(self) -> str:
        return folder_name(self.name, self.version)


def _sha256_of(path: Path) -> str:
    with open(path, "rb", buffering=0) as fh:
        return sha256_stream(fh)[1]


def size_text(n: int) -> str:
    """Bytes for people, three significant digits: 12.3 MB and 10.8 MB stay apart."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 999.5 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def file_stamp(path: Path) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, nlink): what must not move while a file is read."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink


def same_stamp(before: tuple[int, int, int, int], after: tuple[int, int, int, int]) -> bool:
    """Unchanged, allowing the ctime bump of a hard link's other name being removed."""
    if before[:2] != after[:2]:
        return False
    return before[2] == after[2] or before[3] != after[3]


def read_journal(path: Path) -> tuple[dict, dict[str, dict]]:
    """(header, {path: record}) of an upload journal; missing or damaged is empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}, {}
    header: dict = {}
    files: dict[str, dict] = {}
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("%s: ignoring a damaged line %d", path.name, i + 1)
            continue
        if i == 0:
            header = rec if isinstance(rec, dict) else {}
        elif isinstance(rec, dict) and isinstance(rec.get("path"), str) and {"size", "md5", "sha256"} <= rec.keys():
            files[rec.pop("path")] = rec
    return header, files


class Throttle:
    """A token bucket shared by all workers; ``mbps`` of 0 means no cap.

    The bucket holds at most a quarter second of credit, so idle time does not
    buy a burst that would defeat the cap.
    """

    BURST_SECONDS = 0.25

    def __init__(self, mbps: float) -> None:
        self.rate = mbps * 1e6  # bytes per second
        self._lock = threading.Lock()
        self._credit = 0.0
        self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._credit = min(self._credit + (now - self._last) * self.rate, self.rate * self.BURST_SECONDS)
            self._last = now
            self._credit -= n
            delay = -self._credit / self.rate if self._credit < 0 else 0.0
        if delay > 0:
            time.sleep(delay)


class Uploader:
    def __init__(
        self,
        remote: Remote,
        index: RemoteIndex,
        state_dir: Path,
        *,
        workers: int = 4,
        bwlimit_mbps: float = 0.0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.remote = remote
        self.index = index
        self.run = index.run
        self.state_root = state_dir / "state" / "uploads"
        self.workers = workers
        self.throttle = Throttle(bwlimit_mbps)
        self.on_bytes = on_bytes or (lambda n: None)
        self._lock = threading.Lock()

    # -- state -------------------------------------------------------------
    def _state_path(self, name: str) -> Path:
        return self.state_root / f"{name}.jsonl"

    def _load_state(self, name: str, folder: str) -> dict:
        header, files = read_journal(self._state_path(name))
        if header.get("folder") != folder:
            files = {}
        return {"name": name, "folder": folder, "files": files}

    def _rewrite_state(self, state: dict) -> None:
        lines = [{"name": state["name"], "folder": state["folder"]}]
        lines += [{"path": p, **rec} for p, rec in state["files"].items()]
        atomic_write_bytes(self._state_path(state["name"]),
                           "".join(json.dumps(x) + "\n" for x in lines).encode(), durable=False)

    def _append_state(self, name: str, path: str, rec: dict) -> None:
        # One write() per line: a kill cannot tear it; a power cut costs a re-send.
        line = (json.dumps({"path": path, **rec}) + "\n").encode()
        fd = os.open(self._state_path(name), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def drop_state(self, name: str) -> None:
        self._state_path(name).unlink(missing_ok=True)

    # -- transfer ----------------------------------------------------------
    def _send_one(self, job: UploadJob, folder: str, f: LocalFile,
                  cancel: threading.Event) -> tuple[Digest, tuple[int, int, int, int]]:
        sent = 0

        def progress(n: int) -> None:
            nonlocal sent
            if cancel.is_set():
                raise Cancelled()
            self.throttle(n)
            self.on_bytes(n)
            sent += n
            if sent * 2 >= f.size:
                crash_point("mid_file")

        dest = join(folder, f.path)
        src = job.staged / f.path
        for attempt in (1, 2):
            t0 = time.monotonic()
            before = file_stamp(src)
            digest = self.remote.put_file(src, dest, progress)
            if digest.size != f.size or not same_stamp(before, file_stamp(src)):
                raise SourceChanged(f"{job.name}/{f.path} changed while it was read")
            problem = verify.file_problem(self.remote, dest, digest)
            if problem is None:
                dt = max(time.monotonic() - t0, 1e-6)
                log.debug("%s/%s: %d bytes verified (%.1f MB/s)", job.name, f.path, f.size, f.size / dt / 1e6)
                return digest, before
            log.warning("%s/%s: %s (attempt %d)", job.name, f.path, problem, attempt)
        raise IntegrityError(f"{job.name}/{f.path}: remote copy does not verify: {problem}")

    def upload(self, job: UploadJob, cancel: threading.Event, run_id: str, writer: str | None = None) -> Manifest:
        """Send what is missing, verify it, commit.

        Raises RemoteError, IntegrityError, SourceChanged (start again once the files
        are still) or Cancelled.
        """
        target = join(self.run, job.target)
        folder = remote_state.upload_folder(self.remote, target)
        done_already = self._committed_here(target, run_id, job)
        if done_already is not None:
            return done_already  # a stale queue asked twice, or a kill after the commit
        files = walk_files(job.staged)
        remote_state.claim(self.remote, folder, run_id, job.name)
        state = self._load_state(job.name, folder)
        present = {rf.path: rf.size for rf in self.remote.list_files(folder)}
        done: dict[str, Digest] = {}
        stamps: dict[str, tuple[int, int, int, int]] = {}
        todo: list[LocalFile] = []
        for f in files:
            stamp = file_stamp(job.staged / f.path)
            rec = state["files"].get(f.path)
            if (
                isinstance(rec, dict)
                and present.get(f.path) == f.size
                and rec.get("size") == f.size
                and same_stamp((rec["size"], rec.get("mtime_ns"), rec.get("ctime_ns"), rec.get("nlink")), stamp)
            ):
                done[f.path] = Digest(f.size, rec["md5"], rec["sha256"])
                stamps[f.path] = stamp
            else:
                todo.append(f)
        state["files"] = {p: state["files"][p] for p in done}
        self._check_quota(job.name, sum(f.size for f in todo))
        self._rewrite_state(state)
        if done:
            log.info("%s: resuming; %d of %d files already verified", job.name, len(done), len(files))
        total = sum(f.size for f in todo)
        t0 = time.monotonic()

        def one(f: LocalFile) -> None:
            if cancel.is_set():
                raise Cancelled()
            digest, stamp = self._send_one(job, folder, f, cancel)
            with self._lock:
                done[f.path] = digest
                stamps[f.path] = stamp
                rec = {"size": digest.size, "mtime_ns": stamp[1], "ctime_ns": stamp[2], "nlink": stamp[3],
                       "md5": digest.md5, "sha256": digest.sha256}
                state["files"][f.path] = rec
                self._append_state(job.name, f.path, rec)

        # Biggest first: the long transfers start early and the pool drains evenly.
        todo.sort(key=lambda f: -f.size)
        try:
            if todo:
                with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="syncd-upload") as pool:
                    futures = [pool.submit(one, f) for f in todo]
                    try:
                        for fut in futures:
                            fut.result()
                    except BaseException:
                        for fu in futures:
                            fu.cancel()  # the queued ones; running ones finish their file
                        raise
            # A file rewritten after it was sent (same size, old mtime put back) is caught here.
            for f in files:
                if not same_stamp(stamps[f.path], file_stamp(job.staged / f.path)):
                    raise SourceChanged(f"{job.name}/{f.path} changed after it was sent")
        except (SourceChanged, FileNotFoundError):
            self.drop_state(job.name)  # nothing recorded may be trusted now
            raise
        dt = max(time.monotonic() - t0, 1e-6)
        manifest = build_manifest(self.run, job.name, job.step, done.items(), run_id)
        self._commit(target, folder, manifest, run_id, writer)
        self.drop_state(job.name)
        log.info(
            "%s: committed %d files as %s, %.1f MB (%.1f MB sent at %.1f MB/s)",
            job.name, len(manifest.files), job.target, manifest.size_bytes / 1e6, total / 1e6, total / dt / 1e6,
        )
        return manifest

    def _committed_here(self, target: str, run_id: str, job: UploadJob) -> Manifest | None:
        """The manifest at ``target`` when it is already this run's commit of the job's bytes.

        Another commit there (the step saved again while a pass planned this version)
        is an IntegrityError: the next pass plans the next version.
        """
        if self.remote.stat(join(target, MANIFEST_NAME)) is None:
            return None
        try:
            manifest = read_manifest(self.remote, join(target, MANIFEST_NAME), self.index.key)
        except IntegrityError as e:
            raise IntegrityError(f"{target} already exists and is not a valid commit ({e}); not writing into it") \
                from None
        if manifest.run_id != run_id:
            raise IntegrityError(f"{target} already holds another run's commit; not writing into it")
        staged = {f.path: f.size for f in walk_files(job.staged)}
        if staged != {f.path: f.size for f in manifest.files} or any(
                _sha256_of(job.staged / f.path) != f.sha256 for f in manifest.files):
            raise IntegrityError(f"{target} is already committed with other bytes; the next version will hold these")
        return manifest

    def _check_quota(self, name: str, need: int) -> None:
        """Refuse to start what cannot fit: a full Drive fails late and wastes the bytes sent."""
        if not need or not self.remote.capabilities.quota:
            return
        quota = self.remote.quota()
        if quota is not None and quota.free_bytes is not None and quota.free_bytes < need:
            raise QuotaError(
                f"{name} needs {size_text(need)} but the remote has {size_text(quota.free_bytes)} free"
                f"{f'; emptying the trash would free {size_text(quota.trash_bytes)} more' if quota.trash_bytes else ''}; "
                "free space or lower backup_keep_last")

    def _commit(self, target: str, folder: str, manifest: Manifest, run_id: str, writer: str | None) -> None:
        # One writer per remote run: a commit never lands in a run folder another run (or
        # another output folder of this run) took meanwhile.
        try:
            owner, current = read_remote_owner(self.remote, self.run)
        except IntegrityError as e:
            raise RemoteError(f"cannot commit: {e}") from None
        if owner != run_id:
            raise RemoteError(f"cannot commit {manifest.name}: the remote run folder now belongs to run "
                              f"{short(owner)}, not this run ({short(run_id)})")
        if writer is not None and current != writer:
            raise RemoteError(f"cannot commit {manifest.name}: another output folder (writer {short(current)}) "
                              "writes this run now")
        remote_state.commit(self.remote, self.index, folder, target, manifest)
