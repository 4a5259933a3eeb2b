"""What a remote holds for one run, and whose it is, read through the Remote protocol.

    <remote>/<run>/
      syncd-run.json                  the run record: which run id owns this folder (identity.py)
      checkpoint-500/                 committed: a valid syncd-manifest.json carrying our run id
        syncd-upload.json             the claim, written before any byte of an upload
      checkpoint-500.v2/              the same step saved again with other bytes: readers take
                                      the highest committed version; older ones are pruned after
      checkpoint-1000.partial/        an upload in flight (remotes that rename); on object
                                      stores the upload goes to its final name directly and
                                      only the manifest, written last, commits it
      checkpoint-1000.deleting/       a prune in flight (remotes that rename)
      final/, final.v2/               the final model, same rules

Folder names follow ``<base>[.v<K>][.partial|.deleting|.old]``; ``<base>`` is
``checkpoint-N`` with N written as Hugging Face writes it (no leading zeros) or
``final``. Anything else in the run folder is not syncd's and is never touched.

Whose a folder is (``Entry.owner``), the only evidence deletion may act on:
- ``ours``: a manifest that parses, verifies (and is signed, with a key) and carries
  this run's id, or, for an upload that never committed, a claim with this run's id;
- ``legacy``: a valid manifest without a run id (syncd before run ids): restorable,
  never pruned;
- ``foreign``: anything else that could be read: another run's, unparsable, unsigned
  when a key is set, or no proof at all;
- ``unreadable``: a read failed. A failed read is not evidence of anything: such a
  folder is neither counted as a backup nor touched, and its pass deletes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .checkpoints import FINAL_NAME
from .errors import IntegrityError, RemoteError
from .faults import crash_point
from .manifest import MANIFEST_NAME, Manifest, parse_manifest
from .remotes.base import Remote, join, read_small

log = logging.getLogger(__name__)

PARTIAL = ".partial"
DELETING = ".deleting"
OLD = ".old"  # written by syncd before run ids; only ever read now
CLAIM_NAME = "syncd-upload.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # 10,000 files take ~2 MB; anything huge is hostile
MAX_CLAIM_BYTES = 64 * 1024

_FOLDER_RE = re.compile(
    r"^(?P<base>checkpoint-(?P<step>0|[1-9]\d*)|final)"
    r"(?:\.v(?P<version>[2-9]|[1-9]\d+))?"
    r"(?P<suffix>\.partial|\.deleting|\.old)?$"
)

# Folder states
COMMITTED = "committed"  # plain name, valid manifest
UNCOMMITTED = "uncommitted"  # plain name, no manifest (an object-store upload in flight, or not ours)
INVALID = "invalid"  # plain name, a manifest that does not parse or verify
IN_FLIGHT = "partial"
BEING_DELETED = "deleting"
LEFTOVER = "old"

OURS, LEGACY, FOREIGN, UNREADABLE = "ours", "legacy", "foreign", "unreadable"


@dataclass(frozen=True)
class FolderName:
    base: str  # "checkpoint-N" or "final"
    step: int | None
    version: int  # 1 for the plain name
    suffix: str  # "", PARTIAL, DELETING or OLD

    @property
    def committed_name(self) -> str:
        """The name this folder has (or will have) once committed."""
        return folder_name(self.base, self.version)


def parse_folder(name: str) -> FolderName | None:
    """The parts of a run folder's sub-folder name, or None when the name is not syncd's."""
    m = _FOLDER_RE.match(name)
    if m is None:
        return None
    step = int(m["step"]) if m["step"] is not None else None
    return FolderName(m["base"], step, int(m["version"] or 1), m["suffix"] or "")


def folder_name(base: str, version: int, suffix: str = "") -> str:
    return f"{base}{f'.v{version}' if version > 1 else ''}{suffix}"


def base_name(folder: str) -> str:
    parsed = parse_folder(folder)
    return parsed.base if parsed else folder


@dataclass(frozen=True)
class Entry:
    """One sub-folder of the run folder as last read, and the evidence about it."""

    name: str  # the folder's name on the remote
    base: str  # "checkpoint-N" or "final"
    step: int | None
    version: int = 1
    suffix: str = ""
    manifest: Manifest | None = None
    claim_run_id: str | None = None
    owner: str = FOREIGN
    error: str | None = None  # why the manifest is not valid, or why it could not be read

    @property
    def state(self) -> str:
        if self.suffix == PARTIAL:
            return IN_FLIGHT
        if self.suffix == DELETING:
            return BEING_DELETED
        if self.suffix == OLD:
            return LEFTOVER
        if self.manifest is not None:
            return COMMITTED
        if self.error is not None and self.owner != UNREADABLE:
            return INVALID
        return UNCOMMITTED

    @property
    def committed(self) -> bool:
        """A valid manifest under the plain (or versioned) name: a copy a reader may take."""
        return self.state == COMMITTED

    @property
    def partial(self) -> bool:
        return self.suffix == PARTIAL

    @property
    def is_final(self) -> bool:
        return self.base == FINAL_NAME


# Older callers and tests say RemoteCheckpoint.
RemoteCheckpoint = Entry


@dataclass
class Snapshot:
    """Everything one scan of the run folder found; iterating yields its entries."""

    entries: list[Entry] = field(default_factory=list)
    run_id: str | None = None  # the id the scan attributed by (ours, or the remote's record)
    record_run_id: str | None = None  # what the remote's syncd-run.json says
    record_writer: str | None = None  # and which output folder writes the run now
    record_error: str | None = None  # the record could not be read or is not one: nobody owns the folder
    io_errors: list[str] = field(default_factory=list)  # reads that failed: evidence of nothing

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def clean(self) -> bool:
        return not self.io_errors

    def copies(self, owners: tuple[str, ...] = (OURS,)) -> dict[str, Entry]:
        """The copy a reader takes for each base: its highest committed version of ``owners``."""
        out: dict[str, Entry] = {}
        for e in self.entries:
            if e.committed and e.owner in owners and (e.base not in out or e.version > out[e.base].version):
                out[e.base] = e
        return out

    def restorable(self) -> dict[str, Entry]:
        """What restore, status and wait count as backups.

        This run's commits; before the run has any, commits made by syncd before run
        ids existed (the upgrade path). Another run's commits never.
        """
        ours = self.copies((OURS,))
        return ours if ours else self.copies((LEGACY,))

    def versions(self, base: str) -> list[Entry]:
        return [e for e in self.entries if e.base == base]


def read_manifest(remote: Remote, path: str, key: str | None = None) -> Manifest:
    """Fetch and validate one manifest; IntegrityError if it is missing or bad, RemoteError if unreadable."""
    st = remote.stat(path)
    if st is None:
        raise IntegrityError(f"{path} is missing")
    if st.size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{path} is implausibly large ({st.size} bytes)")
    with remote.open_read(path) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest(data, where=path, key=key)


def read_claim(remote: Remote, folder: str) -> str | None:
    """The run id in ``folder``'s claim; None when there is none or it is not a claim.

    Raises RemoteError when it could not be read.
    """
    try:
        data = read_small(remote, join(folder, CLAIM_NAME), MAX_CLAIM_BYTES)
    except IntegrityError:
        return None  # not a claim syncd wrote
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    run_id = doc.get("run_id") if isinstance(doc, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def claim_bytes(run_id: str, name: str, folder: str, created: str) -> bytes:
    return (json.dumps({"format": 1, "run_id": run_id, "name": name, "folder": folder,
                        "created": created}, indent=1) + "\n").encode()


class RemoteIndex:
    """Lists a run's remote folders, reads their evidence, caches committed manifests.

    A committed folder never changes (a new save of a step is a new version), so its
    manifest is read once. ``run_id`` is this run's id when the caller knows it;
    otherwise the remote's run record decides what counts as this run's.
    """

    def __init__(self, remote: Remote, run: str, key: str | None = None, run_id: str | None = None) -> None:
        self.remote = remote
        self.run = run
        self.key = key  # syncd_manifest_key: manifests must carry its HMAC
        self.run_id = run_id
        self._cache: dict[str, Manifest] = {}

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    def scan(self) -> Snapshot:
        """Read the run folder; a listing that fails raises RemoteError (nothing is known)."""
        from .identity import read_remote_owner

        snap = Snapshot()
        try:
            snap.record_run_id, snap.record_writer = read_remote_owner(self.remote, self.run)
        except (RemoteError, IntegrityError) as e:
            snap.record_error = f"run record: {e}"
            snap.io_errors.append(snap.record_error)
        snap.run_id = self.run_id or snap.record_run_id
        for folder in self.remote.list_dirs(self.run):
            parsed = parse_folder(folder)
            if parsed is None:
                continue  # not a name syncd makes: not ours, whatever it holds
            snap.entries.append(self._read_entry(folder, parsed, snap))
        seen = {e.name for e in snap.entries}
        for stale in set(self._cache) - seen:
            self._cache.pop(stale, None)
        return snap

    def read_one(self, folder: str, run_id: str) -> Entry | None:
        """One folder's evidence read afresh (not from a snapshot), judged against ``run_id``."""
        parsed = parse_folder(folder)
        if parsed is None:
            return None
        return self._read_entry(folder, parsed, Snapshot(run_id=run_id))

    def _read_entry(self, folder: str, parsed: FolderName, snap: Snapshot) -> Entry:
        path = join(self.run, folder)
        manifest, error, claim, unreadable = None, None, None, False
        if parsed.suffix != DELETING:
            manifest = self._cache.get(folder)
            if manifest is None:
                try:
                    manifest = read_manifest(self.remote, join(path, MANIFEST_NAME), self.key)
                except IntegrityError as e:
                    error = str(e)
                except RemoteError as e:
                    error, unreadable = f"could not be read: {e}", True
                    snap.io_errors.append(f"{folder}: {e}")
        if manifest is not None and manifest.name != parsed.base:
            error, manifest = f"its manifest describes {manifest.name}, not {parsed.base}", None
        if manifest is None and not unreadable:
            try:
                claim = read_claim(self.remote, path)
            except RemoteError as e:
                unreadable = True
                snap.io_errors.append(f"{folder} (claim): {e}")
        if error is not None and error.endswith("is missing"):
            error = None  # no manifest at all: simply not committed
        run_id = snap.run_id
        if unreadable:
            owner = UNREADABLE
        elif manifest is not None:
            if manifest.run_id is None:
                owner = LEGACY
            else:
                owner = OURS if run_id is not None and manifest.run_id == run_id else FOREIGN
        else:
            owner = OURS if run_id is not None and claim == run_id else FOREIGN
        if manifest is not None and not parsed.suffix and owner in (OURS, LEGACY):
            self._cache[folder] = manifest
        return Entry(folder, parsed.base, parsed.step, parsed.version, parsed.suffix, manifest, claim, owner, error)


# -- transitions -------------------------------------------------------------------
# The only code that changes the state of a folder in the run (deleter.py then empties
# what ``uncommit`` leaves; nothing else renames or writes a manifest):
#
#   claim      nothing            -> upload folder holding our claim (before any byte);
#                                    <base>.vK.partial where the remote renames, <base>.vK otherwise
#   commit     upload folder      -> manifest written and read back, then renamed to <base>.vK
#   finish     <base>.vK.partial with our manifest and no <base>.vK -> renamed (a kill
#                                    came between manifest and rename)
#   uncommit   <base>.vK          -> <base>.vK.deleting (renaming remotes) without its manifest


def upload_folder(remote: Remote, target: str) -> str:
    """Where an upload to ``target`` (a run-relative committed path) writes its files."""
    return target + PARTIAL if remote.capabilities.rename else target


def claim(remote: Remote, folder: str, run_id: str, name: str) -> None:
    """Mark ``folder`` as this run's upload before the first byte goes in.

    A folder that exists without our claim is someone else's: never written into.
    """
    owner = read_claim(remote, folder)
    if owner == run_id:
        return
    if owner is not None or remote.list_files(folder):
        raise IntegrityError(f"{folder} exists and is not this run's upload; not writing into it")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    remote.write_bytes(join(folder, CLAIM_NAME), claim_bytes(run_id, name, folder, created))


def commit(remote: Remote, index: RemoteIndex, folder: str, target: str, manifest: Manifest) -> None:
    """Write the manifest (the commit on object stores), read it back, rename into place."""
    path = join(folder, MANIFEST_NAME)
    crash_point("before_manifest")
    remote.write_bytes(path, manifest.to_json(index.key))
    back = read_manifest(remote, path, index.key)
    if back.files != manifest.files or back.run_id != manifest.run_id:
        raise IntegrityError(f"{path}: manifest read back differs from what was written")
    if folder == target:
        return
    crash_point("before_rename")
    index.forget(manifest.name)
    remote.rename_dir(folder, target)  # fails rather than merge: target is never overwritten


def uncommit(remote: Remote, index: RemoteIndex, path: str, entry: Entry) -> str:
    """Take a committed folder (or a commit whose rename never came) out of every reader's sight.

    Returns where its files now are. The caller must hold the deleter's permit.
    """
    if remote.capabilities.rename and not entry.suffix:
        remote.rename_dir(path, path + DELETING)
        path += DELETING
    remote.delete(join(path, MANIFEST_NAME))
    index.forget(entry.name)
    return path


def finish_interrupted(remote: Remote, index: RemoteIndex, snap: Snapshot,
                       busy: tuple[str, int] | None) -> tuple[Snapshot, list[tuple[str, str]]]:
    """Rename our ``.partial`` uploads whose manifest was written but whose rename never came.

    ``busy`` is the (name, version) the uploader is committing right now: left to it.
    Returns the snapshot to plan from and (folder, error) for renames that failed.
    """
    names = {e.name for e in snap}
    failed, changed = [], False
    for e in snap:
        if not (e.partial and e.owner == OURS and e.manifest is not None):
            continue
        target = folder_name(e.base, e.version)
        if target in names or busy == (e.base, e.version):
            continue
        log.info("%s: finishing an interrupted commit", target)
        try:
            remote.rename_dir(join(index.run, e.name), join(index.run, target))
            changed = True
        except RemoteError as err:
            if target not in {x.name for x in index.scan()}:  # else the uploader was first
                failed.append((target, str(err)))
    return (index.scan() if changed else snap), failed
