"""Any fsspec filesystem as a remote: ``s3://bucket/prefix``, ``gs://``, ``memory://``.

Object stores have no atomic folder rename, so uploads go straight to
``checkpoint-N/`` and only the manifest, written last, commits them. S3 reports
an md5 (the ETag) for single-part objects; otherwise the uploader reads back.

Options for the filesystem come from environment variables the libraries already
honour (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from ..errors import RemoteError
from .base import CHUNK_BYTES, Capabilities, Digest, Hasher, Progress, RemoteFile, join

_PLAIN_MD5 = re.compile(r'^"?([0-9a-f]{32})"?$')


class FsspecRemote:
    capabilities = Capabilities()

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        try:
            # Listings must be fresh: a cached listing would hide a commit or a delete.
            self.fs, self.base = fsspec.core.url_to_fs(url, use_listings_cache=False)
        except (ImportError, ValueError, OSError) as e:
            raise RemoteError(f"open remote {url}: {e}") from e
        self.base = self.base.rstrip("/")

    def _p(self, rel: str) -> str:
        return join(self.base, rel) if rel else self.base

    def _wrap(self, op: str, e: Exception) -> RemoteError:
        return RemoteError(f"{op}: {e}")

    def list_dirs(self, prefix: str) -> list[str]:
        path = self._p(prefix)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001 - backends raise anything
            raise self._wrap(f"list {path}", e) from e
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
        return sorted(set(names))

    def list_files(self, prefix: str) -> list[RemoteFile]:
        path = self._p(prefix)
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"list {path}", e) from e
        out = []
        strip = path.rstrip("/") + "/"
        for name, info in found.items():
            name = name.lstrip("/") if not path.startswith("/") else name
            rel = name[len(strip):] if name.startswith(strip) else name.rsplit("/", 1)[-1]
            if info.get("type") == "file":
                out.append(RemoteFile(rel, int(info.get("size") or 0), self._md5_of(info)))
        return sorted(out, key=lambda f: f.path)

    @staticmethod
    def _md5_of(info: dict) -> str | None:
        m = _PLAIN_MD5.match(str(info.get("ETag") or info.get("etag") or ""))
        return m.group(1) if m else None

    def stat(self, path: str) -> RemoteFile | None:
        full = self._p(path)
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"stat {full}", e) from e
        if info.get("type") != "file":
            return None
        return RemoteFile(path, int(info.get("size") or 0), self._md5_of(info))

    def put_file(self, src: Path, dest: str, progress: Progress | None = None) -> Digest:
        full = self._p(dest)
        try:
            with Hasher() as h, open(src, "rb", buffering=0) as fin, \
                    self.fs.open(full, "wb", block_size=CHUNK_BYTES * 2) as fout:
                while chunk := fin.read(CHUNK_BYTES):
                    h.update(chunk)
                    fout.write(chunk)
                    if progress:
                        progress(len(chunk))
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"upload {dest}", e) from e
        return h.digest()

    def write_bytes(self, dest: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._p(dest), data)
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"write {dest}", e) from e

    def open_read(self, path: str) -> BinaryIO:
        try:
            return self.fs.open(self._p(path), "rb", block_size=CHUNK_BYTES)
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"read {path}", e) from e

    def delete(self, prefix: str) -> None:
        full = self._p(prefix)
        try:
            if self.fs.exists(full):
                self.fs.rm(full, recursive=True)
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"delete {full}", e) from e

    def close(self) -> None:
        pass
