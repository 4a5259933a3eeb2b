"""``syncd-manifest.json``: the commit record of a remote checkpoint.

    <remote>/<run>/checkpoint-N/
        <the checkpoint's files>
        syncd-manifest.json   written last; its presence and validity IS the commit

A manifest read from a remote is untrusted input: it is schema-checked and every
path must stay inside its checkpoint folder before anything acts on it. With
``syncd_manifest_key`` set, manifests also carry ``"hmac"``: HMAC-SHA256 of the
canonical JSON of every other key, so someone who can write to the remote but lacks
the key cannot forge a checkpoint that restore would accept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

from .errors import IntegrityError, UnsafeManifestError
from .hashing import Digest

MANIFEST_NAME = "syncd-manifest.json"
FORMAT = 1
_HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    md5: str | None  # only where the remote's server computes md5 (hashing.py); written as absent
    sha256: str


@dataclass(frozen=True)
class Manifest:
    run: str
    name: str  # "checkpoint-N" or "final"
    step: int | None
    created: str
    files: tuple[ManifestFile, ...]
    run_id: str | None = None  # the run that made it (identity.py); None before run ids existed

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self, key: str | None = None) -> bytes:
        doc: dict = {
            "format": FORMAT,
            "run": self.run,
            "name": self.name,
            "step": self.step,
            "created": self.created,
            **({"run_id": self.run_id} if self.run_id else {}),
            "files": [
                {"path": f.path, "size": f.size, **({"md5": f.md5} if f.md5 else {}), "sha256": f.sha256}
                for f in self.files
            ],
        }
        if key:
            doc["hmac"] = sign(doc, key)
        return (json.dumps(doc, indent=1) + "\n").encode()


def sign(doc: dict, key: str) -> str:
    body = {k: v for k, v in doc.items() if k != "hmac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()


def build_manifest(run: str, name: str, step: int | None, digests: Iterable[tuple[str, Digest]],
                   run_id: str | None = None) -> Manifest:
    files = tuple(
        ManifestFile(path, d.size, d.md5, d.sha256) for path, d in sorted(digests, key=lambda x: x[0])
    )
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Manifest(run, name, step, created, files, run_id)


def safe_relpath(path: object) -> str:
    """A relative POSIX path that cannot leave its folder, or UnsafeManifestError."""
    if not isinstance(path, str) or not path:
        raise UnsafeManifestError(f"manifest path {path!r} is not a non-empty string")
    if "\x00" in path or "\\" in path:
        raise UnsafeManifestError(f"manifest path {path!r} has a forbidden character")
    p = PurePosixPath(path)
    if p.is_absolute() or path.startswith("/"):
        raise UnsafeManifestError(f"manifest path {path!r} is absolute")
    if any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafeManifestError(f"manifest path {path!r} escapes its folder")
    if path == MANIFEST_NAME:
        raise UnsafeManifestError(f"manifest lists itself ({path!r})")
    return path


def parse_manifest(data: bytes, *, where: str = "manifest", key: str | None = None) -> Manifest:
    """Parse and validate an untrusted manifest; raises IntegrityError on any defect.

    With ``key``, an unsigned or wrongly signed manifest is a defect too.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{where} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where} is not a JSON object")
    if key:
        mac = doc.get("hmac")
        if not isinstance(mac, str):
            raise IntegrityError(f"{where} is not signed, but syncd_manifest_key is set")
        if not hmac.compare_digest(mac, sign(doc, key)):
            raise IntegrityError(f"{where} has a wrong signature (tampered, or another syncd_manifest_key)")
    if doc.get("format") != FORMAT:
        raise IntegrityError(f"{where} has unsupported format {doc.get('format')!r}")
    files = doc.get("files")
    if not isinstance(files, list):
        raise IntegrityError(f"{where} has no file list")
    step = doc.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise IntegrityError(f"{where} has an invalid step {step!r}")
    seen: set[str] = set()
    parsed = []
    for entry in files:
        if not isinstance(entry, dict):
            raise IntegrityError(f"{where} has a file entry that is not an object")
        path = safe_relpath(entry.get("path"))
        if path in seen:
            raise UnsafeManifestError(f"{where} lists {path!r} twice")
        seen.add(path)
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise IntegrityError(f"{where} has an invalid size for {path!r}")
        hashes = {}
        for algo, pattern in _HEX.items():
            value = entry.get(algo)
            if algo == "md5" and "md5" not in entry:
                hashes[algo] = None  # not computed: the remote has no server md5 to compare it with
                continue
            if not isinstance(value, str) or not pattern.match(value):
                raise IntegrityError(f"{where} has an invalid {algo} for {path!r}")
            hashes[algo] = value
        parsed.append(ManifestFile(path, size, hashes["md5"], hashes["sha256"]))
    folders = {str(p) for path in seen for p in PurePosixPath(path).parents if str(p) != "."}
    clash = folders & seen
    if clash:  # one name used as a file and as a folder
        raise UnsafeManifestError(f"{where} uses {sorted(clash)[0]!r} as both file and folder")
    run = doc.get("run")
    name = doc.get("name") or (f"checkpoint-{step}" if step is not None else None)
    if not isinstance(run, str) or not isinstance(name, str):
        raise IntegrityError(f"{where} lacks run or name")
    created = doc.get("created") if isinstance(doc.get("created"), str) else ""
    run_id = doc.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise IntegrityError(f"{where} has an invalid run_id {run_id!r}")
    return Manifest(run, name, step, created, tuple(parsed), run_id)
