"""Any fsspec filesystem as a remote: ``s3://bucket/prefix``, ``gs://``, ``memory://``.

Object stores have no atomic folder rename, so uploads go straight to
``checkpoint-N/`` and only the manifest, written last, commits them. S3 computes
an md5 (the ETag) of each single-part object it stores, so an ``s3://`` remote
declares ``server_md5``; for multipart objects and every other filesystem the md5
is ``None`` and the uploader reads back.

The URL's key is normalised once, here: ``s3://bucket//prefix/`` and
``s3://bucket/prefix`` name the same objects, so a listing and a ``stat`` can
never disagree about where a file lives.

Options for the filesystem come from environment variables the libraries already
honour (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` ...).
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from ..errors import CredentialsError, RemoteError, RemoteUnavailable, SyncdError
from ..hashing import CHUNK_BYTES, Digest, Hasher, Progress
from .base import Capabilities, Remote, RemoteFile, join

log = logging.getLogger(__name__)

_PLAIN_MD5 = re.compile(r'^"?([0-9a-f]{32})"?$')

# botocore raises these (by class name: botocore is only there for s3://) when it
# finds no usable credentials; S3 answers these codes to credentials it rejects.
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
_REJECTED_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
# Answers that may pass (the client library has retried them already): S3's codes for
# "slow down" and "try later", and connections that broke after the server was reached.
_BUSY_CODES = {"SlowDown", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeout",
               "InternalError", "RequestLimitExceeded", "TooManyRequestsException", "503", "500", "429"}
_BROKEN_CONNECTIONS = {"ReadTimeoutError", "ConnectionClosedError", "ResponseStreamingError",
                       "ServerDisconnectedError", "ClientPayloadError"}


def _credentials_problem(e: BaseException) -> str | None:
    """What is wrong with the credentials behind ``e`` (or its causes), if that is the failure."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        names = {c.__name__ for c in type(e).__mro__}
        if names & _NO_CREDENTIALS or "Unable to locate credentials" in str(e):
            return "no S3 credentials found"
        code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
        if code in _REJECTED_CREDENTIALS:
            return f"S3 rejected the credentials ({code})"
        e = e.__cause__ or e.__context__
    return None


def _busy_problem(e: BaseException) -> str | None:
    """Why ``e`` (or a cause) is an error that may pass, or None.

    A host that cannot be reached at all is not one: that is a wrong address, said at once.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        names = {c.__name__ for c in type(e).__mro__}
        if names & _BROKEN_CONNECTIONS:
            return type(e).__name__
        if isinstance(e, OSError) and e.errno == errno.EBUSY:  # s3fs's "slow down" without its cause
            return "busy"
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _BUSY_CODES or (isinstance(status, int) and (status >= 500 or status == 429)):
                return f"{code or 'HTTP'} {status or ''}".strip()
        e = e.__cause__ or e.__context__
    return None


def stale_uploads(uploads: Iterable[dict], key_prefix: str, cutoff: datetime) -> list[dict]:
    """The multipart uploads under ``key_prefix`` provably started before ``cutoff``.

    One without a start date is kept: nothing shows that it is not in flight.
    """
    out = []
    for up in uploads:
        started = up.get("Initiated")
        if not isinstance(started, datetime) or not str(up.get("Key", "")).startswith(key_prefix):
            continue
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        if started < cutoff:
            out.append(up)
    return out


class _Reading:
    """A remote file open for reading; any failure while reading is a ``RemoteError``.

    Callers that just listed the file treat a failed read as a failed read, not as
    proof that the file is gone (S3 may answer 404 for a key it listed a moment ago).
    """

    def __init__(self, remote: FsspecRemote, fh, rel: str) -> None:
        self._remote, self._fh, self._rel = remote, fh, rel

    def _do(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - backends raise anything
            raise self._remote._wrap(f"read {self._rel}", e) from e

    def read(self, size: int = -1) -> bytes:
        return self._do(self._fh.read, size)

    def readinto(self, buf) -> int:
        return self._do(self._fh.readinto, buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._do(self._fh.seek, offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._do(self._fh.close)

    def __enter__(self) -> _Reading:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FsspecRemote(Remote):
    capabilities = Capabilities()  # an s3:// instance adds server_md5 (see __init__)

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        # Multipart uploads started before this moment belong to an earlier process.
        self._created = datetime.now(timezone.utc)
        try:
            # Listings must be fresh: a cached listing would hide a commit or a delete.
            # Our own instance: credentials are read now, not reused from an older one.
            self.fs, base = fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True)
        except (ImportError, ValueError, OSError) as e:
            raise RemoteError(f"open remote {url}: {e}") from e
        # One spelling of the key for every operation: no empty segments, no slash at
        # the end; a leading slash only where the filesystem's paths have one.
        self.base = ("/" if base.startswith("/") else "") + "/".join(s for s in base.split("/") if s)
        protocol = self.fs.protocol
        self._is_s3 = "s3" in ((protocol,) if isinstance(protocol, str) else protocol)
        if self._is_s3:
            self.capabilities = Capabilities(server_md5=True)
        # Bucketed stores (s3, gs ...): a missing bucket is a typo, not an empty remote.
        self._bucket = self.fs.split_path(self.base)[0] if hasattr(self.fs, "split_path") and self.base else None
        self._bucket_seen = False

    def _p(self, rel: str) -> str:
        return join(self.base, rel) if rel else self.base

    def _wrap(self, op: str, e: BaseException) -> SyncdError:
        problem = _credentials_problem(e)
        if problem is not None:
            return CredentialsError(f"{op}: {problem} for {self.url}; {_CREDENTIALS_HINT}")
        busy = _busy_problem(e)
        if busy is not None:
            return RemoteUnavailable(f"{op}: {self.url} answers {busy}; this may pass ({e})")
        return RemoteError(f"{op}: {e}")

    def _check_bucket(self) -> None:
        """Raise RemoteError if the bucket is missing; a positive answer is kept."""
        if self._bucket is None or self._bucket_seen:
            return
        try:
            self.fs.info(self._bucket)
        except FileNotFoundError as e:
            raise RemoteError(f"bucket {self._bucket} does not exist (remote {self.url})") from e
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"check bucket {self._bucket}", e) from e
        self._bucket_seen = True

    def list_dirs(self, prefix: str) -> list[str]:
        path = self._p(prefix)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            entries = []
        except Exception as e:  # noqa: BLE001 - backends raise anything
            raise self._wrap(f"list {path}", e) from e
        if not entries:
            self._check_bucket()
        names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
        return sorted(set(names))

    def list_files(self, prefix: str) -> list[RemoteFile]:
        path = self._p(prefix)
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"list {path}", e) from e
        if not found:
            self._check_bucket()
        out = []
        strip = path.rstrip("/") + "/"
        for name, info in found.items():
            name = name.lstrip("/") if not path.startswith("/") else name
            rel = name[len(strip):] if name.startswith(strip) else name.rsplit("/", 1)[-1]
            if info.get("type") == "file":
                out.append(RemoteFile(rel, int(info.get("size") or 0), self._md5_of(info)))
        return sorted(out, key=lambda f: f.path)

    def _md5_of(self, info: dict) -> str | None:
        if not self.capabilities.server_md5:
            return None  # an ETag elsewhere is not an md5 of the bytes, whatever it looks like
        m = _PLAIN_MD5.match(str(info.get("ETag") or info.get("etag") or ""))
        return m.group(1) if m else None

    def stat(self, path: str) -> RemoteFile | None:
        full = self._p(path)
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            self._check_bucket()
            return None
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"stat {full}", e) from e
        if info.get("type") != "file":
            return None
        return RemoteFile(path, int(info.get("size") or 0), self._md5_of(info))

    def put_file(self, src: Path, dest: str, progress: Progress | None = None) -> Digest:
        full = self._p(dest)
        fout = None
        try:
            with Hasher(md5=self.capabilities.server_md5) as h, open(src, "rb", buffering=0) as fin:
                fout = self.fs.open(full, "wb", block_size=CHUNK_BYTES * 2)
                while chunk := fin.read(CHUNK_BYTES):
                    h.update(chunk)
                    fout.write(chunk)
                    if progress:
                        progress(len(chunk))
                fout.close()  # completes the upload: only now may the object exist
        except BaseException as e:  # Cancelled too: a half-sent file is never completed
            if fout is not None:
                self._abandon(fout, dest)
            if isinstance(e, Exception):
                raise self._wrap(f"upload {dest}", e) from e
            raise
        return h.digest()

    @staticmethod
    def _abandon(fout, dest: str) -> None:
        """Throw away a file being written instead of closing it, which would complete it.

        s3fs's ``discard`` aborts the multipart upload (nothing billed, nothing at the
        key) and drops the buffer a small file would have been put from at close.
        """
        try:
            discard = getattr(fout, "discard", None)
            if discard is not None:
                discard()
        except Exception as e:  # noqa: BLE001 - the original failure matters more
            log.warning("%s: could not abort the partial upload: %s", dest, e)
        finally:
            try:
                fout.closed = True  # so neither close() nor the garbage collector commits it
            except AttributeError:
                pass

    def write_bytes(self, dest: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._p(dest), data)
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"write {dest}", e) from e

    def open_read(self, path: str) -> BinaryIO:
        try:
            fh = self.fs.open(self._p(path), "rb", block_size=CHUNK_BYTES)
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"read {path}", e) from e
        return _Reading(self, fh, path)  # type: ignore[return-value]

    def delete(self, prefix: str) -> None:
        full = self._p(prefix)
        try:
            if self.fs.exists(full):
                self.fs.rm(full, recursive=True)
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            raise self._wrap(f"delete {full}", e) from e

    def abort_incomplete_uploads(self, prefix: str) -> int:
        """Abort S3 multipart uploads under ``<base>/<prefix>/`` left by an earlier process.

        A SIGKILL mid-upload leaves an incomplete multipart upload that S3 keeps (and
        bills) until someone aborts it. Aborting one respects "syncd deletes only what
        it can prove it made": an incomplete upload is never a readable object, so no
        good copy can be lost; it lies under the run folder syncd owns (``prefix/``
        with its slash, so a sibling run ``prefix-2`` is not touched); and only
        uploads initiated before this object was constructed are aborted, so none of
        this process's own is. That last test compares S3's ``Initiated`` with this
        machine's clock: call this at start, before the first upload.

        Returns how many were aborted; 0 for other filesystems. Best effort: a
        failure is logged and the rest is left for the next start.
        """
        if not self._is_s3:
            return 0
        if not prefix.strip("/"):
            raise ValueError("abort_incomplete_uploads needs the run folder, not the remote's root")
        folder = join(self.base, prefix)
        bucket, key, _ = self.fs.split_path(folder)
        key_prefix = key + "/"
        aborted = 0
        try:
            for up in stale_uploads(self._multipart_uploads(bucket, key_prefix), key_prefix, self._created):
                try:
                    self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                except FileNotFoundError:
                    continue  # completed or aborted meanwhile
                aborted += 1
        except Exception as e:  # noqa: BLE001
            log.warning("cannot abort incomplete uploads under s3://%s/: %s", folder, self._wrap("list uploads", e))
        if aborted:
            log.info("aborted %d incomplete multipart upload(s) under s3://%s/ left by an earlier process",
                     aborted, folder)
        else:
            log.debug("no incomplete multipart uploads under s3://%s/", folder)
        return aborted

    def _multipart_uploads(self, bucket: str, key_prefix: str) -> Iterator[dict]:
        kw = {"Bucket": bucket, "Prefix": key_prefix}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", **kw)
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated") or not page.get("NextKeyMarker"):
                return
            kw["KeyMarker"] = page["NextKeyMarker"]
            kw["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    def close(self) -> None:
        pass
