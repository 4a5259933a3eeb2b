"""Whether a remote holds the bytes we meant: the one check that the uploader (after
each file), the daemon (its timer's look at every committed copy), ``syncd verify``
and restore share.

A size is always compared. A remote's md5 is taken as proof only where the backend
declares that its server computes it from the bytes it stores
(``Capabilities.server_md5``: Drive's md5Checksum, S3's single-part ETag); an md5
that a remote merely reports back (a value stored beside the file, a mount's cached
attribute) proves nothing. Without such an md5 the bytes are read back and their
sha256 compared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .errors import RemoteError
from .hashing import sha256_stream
from .manifest import Manifest, ManifestFile
from .remote_state import Entry
from .remotes.base import Remote, RemoteFile, join

log = logging.getLogger("syncd")


class Expected(Protocol):
    """What a file should be: a Digest of what was sent, or a manifest's entry."""

    size: int
    md5: str | None
    sha256: str


def server_md5(remote: Remote, rf: RemoteFile) -> str | None:
    """The md5 of ``rf`` when the server computed it; None when only a read-back can tell."""
    return rf.md5 if remote.capabilities.server_md5 else None


def file_problem(remote: Remote, path: str, want: Expected, stat: RemoteFile | None = None) -> str | None:
    """What is wrong with the remote file at ``path``, or None when it holds ``want``'s bytes."""
    st = stat if stat is not None else remote.stat(path)
    if st is None:
        return "missing on the remote"
    if st.size != want.size:
        return f"remote size {st.size} != expected {want.size}"
    md5 = server_md5(remote, st)
    if md5 is not None and want.md5 is not None:
        return None if md5 == want.md5 else f"remote md5 {md5} != expected {want.md5}"
    with remote.open_read(path) as fh:
        size, sha = sha256_stream(fh)
    if size != want.size:
        return f"read back {size} bytes, expected {want.size}"
    return None if sha == want.sha256 else f"remote sha256 {sha} != expected {want.sha256}"


def listing_problems(remote: Remote, manifest: Manifest,
                     stored: Mapping[str, RemoteFile]) -> tuple[list[str], list[ManifestFile]]:
    """What a listing of a committed folder shows wrong against its manifest.

    Returns the problems (missing files, wrong sizes, a server md5 that differs) and the
    files the listing cannot vouch for: only reading them back can.
    """
    problems, unchecked = [], []
    for mf in manifest.files:
        rf = stored.get(mf.path)
        if rf is None:
            problems.append(f"{mf.path} is missing")
        elif rf.size != mf.size:
            problems.append(f"{mf.path} has {rf.size} bytes, manifest says {mf.size}")
        elif server_md5(remote, rf) is None or mf.md5 is None:
            unchecked.append(mf)
        elif server_md5(remote, rf) != mf.md5:
            problems.append(f"{mf.path} md5 differs")
    return problems, unchecked


def folder_problems(remote: Remote, folder: str, manifest: Manifest, *, read_back: bool) -> list[str]:
    """Everything wrong with a committed folder; ``read_back`` also reads the files a listing cannot vouch for."""
    stored = {f.path: f for f in remote.list_files(folder)}
    problems, unchecked = listing_problems(remote, manifest, stored)
    if read_back:
        for mf in unchecked:
            problem = file_problem(remote, join(folder, mf.path), mf, stored[mf.path])
            if problem is not None:
                problems.append(f"{mf.path} checksum differs ({problem})")
    return problems


def damaged_copies(remote: Remote, run: str, copies: Mapping[str, Entry],
                   before: Mapping[str, str]) -> dict[str, str]:
    """Committed copies whose listing no longer matches their manifest -> what is wrong.

    A listing that fails proves nothing: that copy keeps its earlier verdict. Only the
    listing is read (sizes and server md5s); reading every byte back is ``syncd verify``'s.
    """
    out = {}
    for e in copies.values():
        assert e.manifest is not None
        try:
            problems = folder_problems(remote, join(run, e.name), e.manifest, read_back=False)
        except RemoteError as err:
            log.warning("%s: could not check its files: %s", e.name, err)
            if e.name in before:
                out[e.name] = before[e.name]
            continue
        if problems:
            out[e.name] = f"{e.name}: damaged on the remote ({'; '.join(problems[:3])})"
    return out
