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

Commit = write ``syncd-manifest.json`` last; on remotes that rename atomically the
folder is then renamed from ``checkpoint-N.partial`` to ``checkpoint-N``.
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

from .checkpoints import LocalFile, walk_files
from .errors import Cancelled, IntegrityError, QuotaError
from .faults import crash_point
from .fsutil import atomic_write_bytes
from .manifest import MANIFEST_NAME, Manifest, build_manifest
from .remote_state import OLD, PARTIAL, RemoteIndex, read_manifest
from .remotes.base import Digest, Remote, join, sha256_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadJob:
    name: str  # "checkpoint-N" or "final"
    step: int | None
    staged: Path


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
    def _send_one(self, job: UploadJob, folder: str, f: LocalFile, cancel: threading.Event) -> Digest:
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
        for attempt in (1, 2):
            t0 = time.monotonic()
            digest = self.remote.put_file(job.staged / f.path, dest, progress)
            if digest.size != f.size:
                raise IntegrityError(f"{job.name}/{f.path} changed size while uploading")
            problem = self._verify(dest, digest)
            if problem is None:
                dt = max(time.monotonic() - t0, 1e-6)
                log.debug("%s/%s: %d bytes verified (%.1f MB/s)", job.name, f.path, f.size, f.size / dt / 1e6)
                return digest
            log.warning("%s/%s: %s (attempt %d)", job.name, f.path, problem, attempt)
        raise IntegrityError(f"{job.name}/{f.path}: remote copy does not verify: {problem}")

    def _verify(self, dest: str, digest: Digest) -> str | None:
        st = self.remote.stat(dest)
        if st is None:
            return "missing on the remote after upload"
        if st.size != digest.size:
            return f"remote size {st.size} != sent {digest.size}"
        if st.md5 is not None:  # the server's own checksum: no read-back needed
            return None if st.md5 == digest.md5 else f"remote md5 {st.md5} != sent {digest.md5}"
        # No server checksum: read the stored bytes back; sha256 is the faster hash here.
        with self.remote.open_read(dest) as fh:
            size, sha = sha256_stream(fh)
        if size != digest.size:
            return f"read back {size} bytes, sent {digest.size}"
        return None if sha == digest.sha256 else f"remote sha256 {sha} != sent {digest.sha256}"

    def upload(self, job: UploadJob, cancel: threading.Event) -> Manifest:
        """Send what is missing, verify it, commit; raises RemoteError/IntegrityError/Cancelled."""
        rename = self.remote.capabilities.rename
        target = join(self.run, job.name)
        folder = target + PARTIAL if rename else target
        if job.step is not None and self.remote.stat(join(target, MANIFEST_NAME)) is not None:
            # A committed checkpoint never changes: a stale queue asked twice.
            return read_manifest(self.remote, join(target, MANIFEST_NAME), self.index.key)
        files = walk_files(job.staged)
        state = self._load_state(job.name, folder)
        present = {rf.path: rf.size for rf in self.remote.list_files(folder)}
        done: dict[str, Digest] = {}
        todo: list[LocalFile] = []
        for f in files:
            mtime_ns = (job.staged / f.path).stat().st_mtime_ns
            rec = state["files"].get(f.path)
            if (
                isinstance(rec, dict)
                and rec.get("size") == f.size
                and rec.get("mtime_ns") == mtime_ns
                and present.get(f.path) == f.size
            ):
                done[f.path] = Digest(f.size, rec["md5"], rec["sha256"])
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
            digest = self._send_one(job, folder, f, cancel)
            mtime_ns = (job.staged / f.path).stat().st_mtime_ns
            with self._lock:
                done[f.path] = digest
                rec = {"size": digest.size, "mtime_ns": mtime_ns, "md5": digest.md5, "sha256": digest.sha256}
                state["files"][f.path] = rec
                self._append_state(job.name, f.path, rec)

        # Biggest first: the long transfers start early and the pool drains evenly.
        todo.sort(key=lambda f: -f.size)
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
        dt = max(time.monotonic() - t0, 1e-6)
        manifest = build_manifest(self.run, job.name, job.step, done.items())
        self._commit(target, folder, manifest)
        self.drop_state(job.name)
        log.info(
            "%s: committed %d files, %.1f MB (%.1f MB sent at %.1f MB/s)",
            job.name, len(manifest.files), manifest.size_bytes / 1e6, total / 1e6, total / dt / 1e6,
        )
        return manifest

    def _check_quota(self, name: str, need: int) -> None:
        """Refuse to start what cannot fit: a full Drive fails late and wastes the bytes sent."""
        if not need or not self.remote.capabilities.quota:
            return
        quota = self.remote.quota()
        if quota is not None and quota.free_bytes is not None and quota.free_bytes < need:
            raise QuotaError(
                f"{name} needs {need / 1e9:.2f} GB but the remote has {quota.free_bytes / 1e9:.2f} GB free"
                f"{f' ({quota.trash_bytes / 1e9:.2f} GB of it in the trash)' if quota.trash_bytes else ''}; "
                "free space or lower backup_keep_last")

    def _commit(self, target: str, folder: str, manifest: Manifest) -> None:
        path = join(folder, MANIFEST_NAME)
        crash_point("before_manifest")
        self.remote.write_bytes(path, manifest.to_json(self.index.key))
        back = read_manifest(self.remote, path, self.index.key)
        if back.files != manifest.files:
            raise IntegrityError(f"{path}: manifest read back differs from what was written")
        if folder == target:
            return
        crash_point("before_rename")
        self.index.forget(manifest.name)
        if self.remote.stat(join(target, MANIFEST_NAME)) is not None or self.remote.list_files(target):
            # An older commit of the same name (the final model saved again): keep it
            # until the new one is in place, so a copy exists at every instant.
            self.remote.delete(target + OLD)
            self.remote.rename_dir(target, target + OLD)
        self.remote.rename_dir(folder, target)
        self.remote.delete(target + OLD)
