"""What a remote holds for one run, read through the Remote protocol.

    <remote>/<run>/
      checkpoint-500/            committed: holds a valid syncd-manifest.json
      checkpoint-1000.partial/   an upload in flight (folder remotes)
      checkpoint-1000.deleting/  a prune in flight (folder remotes)
      final/                     the final model, same rule
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .checkpoints import FINAL_NAME, step_of
from .errors import IntegrityError, RemoteError
from .manifest import MANIFEST_NAME, Manifest, parse_manifest
from .remotes.base import Remote, join

log = logging.getLogger(__name__)

PARTIAL = ".partial"
DELETING = ".deleting"
OLD = ".old"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # 10,000 files take ~2 MB; anything huge is hostile


@dataclass(frozen=True)
class RemoteCheckpoint:
    name: str  # the folder's name on the remote
    base: str  # "checkpoint-N" or "final", without suffix
    step: int | None
    manifest: Manifest | None = None
    error: str | None = None

    @property
    def committed(self) -> bool:
        return self.manifest is not None and self.name == self.base

    @property
    def partial(self) -> bool:
        return self.name.endswith(PARTIAL)

    @property
    def is_final(self) -> bool:
        return self.base == FINAL_NAME


def base_name(folder: str) -> str:
    for suffix in (PARTIAL, DELETING, OLD):
        if folder.endswith(suffix):
            return folder[: -len(suffix)]
    return folder


def read_manifest(remote: Remote, path: str, key: str | None = None) -> Manifest:
    """Fetch and validate one manifest; IntegrityError if it is missing or bad."""
    st = remote.stat(path)
    if st is None:
        raise IntegrityError(f"{path} is missing")
    if st.size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{path} is implausibly large ({st.size} bytes)")
    with remote.open_read(path) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest(data, where=path, key=key)


class RemoteIndex:
    """Lists a run's remote folders and caches the manifests of committed checkpoints.

    A committed ``checkpoint-N`` never changes, so its manifest is read once; the
    final model can be replaced and is read every time.
    """

    def __init__(self, remote: Remote, run: str, key: str | None = None) -> None:
        self.remote = remote
        self.run = run
        self.key = key  # syncd_manifest_key: manifests must carry its HMAC
        self._cache: dict[str, Manifest] = {}

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    def scan(self) -> list[RemoteCheckpoint]:
        out = []
        for folder in self.remote.list_dirs(self.run):
            base = base_name(folder)
            step = step_of(base)
            if step is None and base != FINAL_NAME:
                continue  # not ours
            manifest, error = None, None
            if folder == base or folder.endswith(PARTIAL):
                cached = self._cache.get(folder) if folder != FINAL_NAME else None
                if cached is not None:
                    manifest = cached
                else:
                    try:
                        manifest = read_manifest(self.remote, join(self.run, folder, MANIFEST_NAME), self.key)
                        if folder == base and base != FINAL_NAME:
                            self._cache[folder] = manifest
                    except IntegrityError as e:
                        error = str(e)
                    except RemoteError as e:
                        error = str(e)
            out.append(RemoteCheckpoint(folder, base, step, manifest, error))
        seen = {c.name for c in out}
        for stale in set(self._cache) - seen:
            self._cache.pop(stale, None)
        return out


def committed_steps(entries: list[RemoteCheckpoint]) -> list[int]:
    return sorted(c.step for c in entries if c.committed and c.step is not None)
