"""Requests to the Drive API: credentials, one connection per thread, retries, errors.

Every request of the Drive remote goes through one ``Transport``. It owns

- the credentials file, read again when ``syncd auth`` rewrites it (threads then
  re-authorise their connections);
- an authorised ``httplib2.Http`` per thread (they are not thread-safe), closed once
  its thread has ended;
- the API client built from the bundled discovery document ``drive.v2.json``, its URLs
  moved to ``syncd_gdrive_root_url`` when set, so a proxy or a test server gets every
  request, uploads included;
- ``call(op, fn)``: run ``fn`` until it answers, sleeping with jittered exponential
  backoff between transient failures, and turn the others into one ``SyncdError``
  whose message starts with ``op``.

What is transient: HTTP 429, 5xx, 403 with a rate-limit reason, a connection that
broke or timed out; when the tries run out it is ``RemoteUnavailable`` (the daemon
starts anyway and retries each pass). ``briefly()`` gives this thread's requests a
budget of a few seconds instead of minutes: ``syncd start``'s probe, ``syncd status``.
What is not: a full Drive or its daily upload cap (``QuotaError``),
rejected credentials (``CredentialsError``; retried once at once if the file changed
meanwhile), any other 4xx (``RemoteError``), and a Drive that never answered at all
(refused, no such host: ``RemoteError`` within a second or two, not minutes).
"""

from __future__ import annotations

import datetime as dt
import errno
import http.client
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CredentialsError, QuotaError, RemoteError, RemoteUnavailable
from .gdrive_auth import describe_refresh_error, load_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

# Reasons Drive gives with a 403 that mean "slow down", not "no".
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "sharingRateLimitExceeded", "backendError"}
# The 750 GB/day cap (and its older spellings): retrying for hours helps nobody.
DAILY_REASONS = {"uploadLimitExceeded", "dailyLimitExceeded", "quotaExceeded", "teamDriveFileLimitExceeded"}
# How long ahead of expiry an access token is renewed before an upload starts.
REFRESH_MARGIN_S = 600
# Backoff: base * 2**attempt with jitter, capped; about 4 minutes in all at base 1 s.
BACKOFF_CAP_S = 64.0
MAX_ATTEMPTS = 9
# Within ``briefly()``: two waits, about 1.5 s in all at base 1 s.
BRIEF_ATTEMPTS = 3
# A Drive that never answered (refused, no such host) gets this many quick tries.
UNREACHABLE_ATTEMPTS = 3
UNREACHABLE_DELAY_S = 0.5


@lru_cache(maxsize=8)
def discovery_document(root_url: str | None) -> str:
    """The bundled Drive v2 discovery document, its URLs moved to ``root_url`` if given."""
    doc = json.loads(resources.files(__package__).joinpath("drive.v2.json").read_text(encoding="utf-8"))
    if root_url:
        root = root_url if root_url.endswith("/") else root_url + "/"
        doc["rootUrl"] = root
        doc["mtlsRootUrl"] = root
        doc["baseUrl"] = root + doc["servicePath"]
    return json.dumps(doc)


def upload_endpoint(root_url: str | None) -> str:
    """Where resumable upload sessions of new files start (``files.insert`` with media)."""
    doc = json.loads(discovery_document(root_url))
    return f"{doc['rootUrl']}upload/{doc['servicePath']}files"


def unreachable(err: BaseException) -> str | None:
    """Why no connection could be made at all, or None for errors that may pass."""
    import httplib2

    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (socket.gaierror, httplib2.ServerNotFoundError)):
        return "host name not found"
    if isinstance(err, OSError) and err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable"
    return None


def error_reason(content: Any) -> str:
    """The first ``reason`` of a Drive error body (``rateLimitExceeded``...), or ""."""
    try:
        data = json.loads(content.decode("utf-8"))
        errors = data["error"].get("errors") or []
        return (errors[0].get("reason") if errors else None) or data["error"].get("status") or ""
    except (ValueError, KeyError, AttributeError, TypeError, IndexError):
        return ""


def close_http(h: Any) -> None:
    """Close the open connections of an ``httplib2.Http``."""
    for conn in list(getattr(h, "connections", {}).values()):
        try:
            conn.close()
        except OSError:
            pass


class Transport:
    """Authorised, retried requests to one Drive API endpoint."""

    def __init__(self, *, credentials: str | None, root_url: str | None, timeout_s: float,
                 backoff_base_s: float, max_attempts: int) -> None:
        self.root_url = root_url
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.max_attempts = max_attempts
        self.cred_path = str(Path(credentials).expanduser()) if credentials else None
        # A Shared Drive's id once the remote has found its root there: a full Drive then
        # means something else to a service account (see ``_raise_or_wait``).
        self.shared_drive: str | None = None
        self.closing = threading.Event()
        self._rng = random.Random()
        self._reached = False  # whether any request got an answer: unreachable at first fails fast
        self._lock = threading.Lock()  # the list of connections
        self._local = threading.local()
        self._https: list[tuple[threading.Thread, Any]] = []
        self._cred_lock = threading.Lock()
        self._cred_gen = 0  # bumped when the credentials file is read again; threads re-authorise
        self._cred_stamp = self._stamp()
        self.creds, self.cred_kind = load_credentials(self.cred_path)  # also readies oauth2client
        from googleapiclient.discovery import build_from_document
        from pydrive2.auth import GoogleAuth

        self._gauth = GoogleAuth(settings={
            "client_config_backend": "settings",
            "client_config": {"client_id": "unused", "client_secret": "unused"},
            "save_credentials": False,
            "oauth_scope": ["https://www.googleapis.com/auth/drive"],
        }, http_timeout=timeout_s)
        self._gauth.credentials = self.creds
        self._gauth.auth_method = "service" if self.cred_kind == "service" else "local"
        self._gauth.http = self.http()
        self.service = build_from_document(discovery_document(root_url), http=self._gauth.http)
        self._gauth.service = self.service
        self.upload_url = upload_endpoint(root_url)

    # ------------------------------------------------------------ connections

    def http(self) -> Any:
        """An authorised httplib2.Http for this thread.

        Upload pools come and go, so connections of threads that have ended are closed
        here rather than left open for the life of the daemon.
        """
        h = getattr(self._local, "http", None)
        if h is None or getattr(self._local, "gen", None) != self._cred_gen:
            stale = h  # authorised with credentials read before the file changed
            h = self._gauth.Get_Http_Object()
            self._local.http, self._local.gen = h, self._cred_gen
            with self._lock:
                dead = [(t, old) for t, old in self._https if not t.is_alive() or old is stale]
                self._https = [(t, old) for t, old in self._https if t.is_alive() and old is not stale]
                self._https.append((threading.current_thread(), h))
            for _, old in dead:
                close_http(old)
        return h

    def close(self) -> None:
        """Stop every retry loop now and close every connection."""
        self.closing.set()
        with self._lock:
            https, self._https = self._https, []
        for _, h in https:
            close_http(h)

    # ------------------------------------------------------------ credentials

    def _stamp(self) -> tuple[int, int, int] | None:
        if self.cred_path is None:
            return None
        try:
            st = os.stat(self.cred_path)
        except OSError:
            return None  # gone for a moment, or for good: keep what we have; Drive will say
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload_credentials(self) -> bool:
        """Read the credentials file again if it changed (``syncd auth`` rewrote it); True if so."""
        stamp = self._stamp()
        if stamp is None or stamp == self._cred_stamp:
            return False
        with self._cred_lock:
            if stamp == self._cred_stamp:
                return False  # another thread did it meanwhile
            creds, kind = load_credentials(self.cred_path)  # a broken file: its one clear line
            self.creds, self.cred_kind = creds, kind
            self._gauth.credentials = creds
            self._gauth.auth_method = "service" if kind == "service" else "local"
            self._cred_stamp = stamp
            self._cred_gen += 1
        log.warning("Google Drive credentials file %s changed; using the new credentials", self.cred_path)
        return True

    def fresh_token(self) -> None:
        """Renew the access token now if it would expire during a long upload."""
        expiry = getattr(self.creds, "token_expiry", None)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        if getattr(self.creds, "access_token", None) and expiry and (expiry - now).total_seconds() > REFRESH_MARGIN_S:
            return
        import httplib2

        raw = httplib2.Http(timeout=self.timeout_s)
        self.call("refresh token", lambda: self.creds.refresh(raw))

    # ------------------------------------------------------------ requests

    @contextmanager
    def briefly(self) -> Iterator[None]:
        """This thread's requests give up after ``BRIEF_ATTEMPTS`` on errors that may pass."""
        before = getattr(self._local, "attempts", None)
        self._local.attempts = min(BRIEF_ATTEMPTS, self.max_attempts)
        try:
            yield
        finally:
            self._local.attempts = before

    def execute(self, op: str, request: Any) -> Any:
        """Run a googleapiclient request on this thread's connection, with retries."""
        return self.call(op, lambda: request.execute(http=self.http()))

    def call(self, op: str, fn: Callable[[], T]) -> T:
        """``fn()`` until it answers; transient failures wait and retry, others raise."""
        self.reload_credentials()
        attempt, reloaded = 0, False
        while True:
            try:
                out = fn()
                self.answered()
                return out
            except Exception as e:  # sorted into retry or raise just below
                if self.retry(op, e, attempt, reloaded):
                    reloaded = True
                else:
                    attempt += 1

    def answered(self) -> None:
        """Note that Drive answered: from now on a refused connection is a hiccup."""
        self._reached = True

    def retry(self, op: str, err: Exception, attempt: int, reloaded: bool) -> bool:
        """Sleep before attempt ``attempt + 1``, or raise the right ``SyncdError``.

        True: rejected credentials were replaced on disk meanwhile and are read again,
        so retry at once, and without counting an attempt (only once: ``reloaded``)."""
        try:
            self._raise_or_wait(op, err, attempt)
        except CredentialsError:
            if reloaded or not self.reload_credentials():
                raise
            return True
        return False

    def _raise_or_wait(self, op: str, err: Exception, attempt: int) -> None:
        import httplib2
        from googleapiclient.errors import HttpError
        from oauth2client.client import AccessTokenRefreshError, HttpAccessTokenRefreshError

        if isinstance(err, (RemoteError, CredentialsError)):
            raise err
        why: str
        if isinstance(err, HttpError):
            status = err.resp.status
            reason = error_reason(err.content)
            why = f"HTTP {status} {reason}".strip()
            if status == 403 and reason == "storageQuotaExceeded":
                if self.cred_kind == "service" and not self.shared_drive:
                    raise QuotaError(
                        f"{op}: service accounts have no storage in My Drive; put the backup folder "
                        "on a Shared Drive (syncd_gdrive_root_id) or use OAuth user credentials (syncd auth)"
                    ) from err
                raise QuotaError(
                    f"{op}: Google Drive storage is full; free space (emptying the trash helps) "
                    "or lower backup_keep_last") from err
            if status == 403 and reason in DAILY_REASONS:
                raise QuotaError(
                    f"{op}: Google Drive's daily upload limit (750 GB a day) is reached; "
                    "uploads can continue once it resets, within 24 hours") from err
            if status == 401:
                raise CredentialsError(
                    f"{op}: Google Drive rejected the credentials"
                    f"{' in ' + self.cred_path if self.cred_path else ''}; run syncd auth again") from err
            retry = status == 429 or status >= 500 or (status == 403 and reason in RATE_REASONS)
            if not retry:
                raise RemoteError(f"{op}: {why}") from err
        elif isinstance(err, HttpAccessTokenRefreshError):
            if err.status is not None and err.status < 500 and err.status != 429:
                raise CredentialsError(describe_refresh_error(err, self.cred_path)) from None
            why = f"token refresh HTTP {err.status}"
        elif isinstance(err, AccessTokenRefreshError):
            raise CredentialsError(describe_refresh_error(err, self.cred_path)) from None
        elif isinstance(err, (OSError, httplib2.HttpLib2Error, http.client.HTTPException)):
            why = type(err).__name__
            cause = unreachable(err)
            if cause and not self._reached:
                # Nothing ever answered: a wrong address or no network, not a hiccup. Say so
                # in a second or two rather than after minutes of backoff.
                if attempt + 1 >= UNREACHABLE_ATTEMPTS:
                    where = f" at {self.root_url}" if self.root_url else ""
                    raise RemoteError(
                        f"{op}: cannot reach Google Drive{where} ({cause}); "
                        "check the network connection") from None
                if self.closing.wait(min(UNREACHABLE_DELAY_S, self.backoff_base_s)):
                    raise RemoteError(f"{op}: remote closed while retrying ({why})") from err
                return
        else:
            raise err
        if attempt + 1 >= (getattr(self._local, "attempts", None) or self.max_attempts):
            raise RemoteUnavailable(f"{op}: giving up after {attempt + 1} attempts ({why}); "
                                    "this may pass") from err
        delay = min(BACKOFF_CAP_S, self.backoff_base_s * 2**attempt) * (0.5 + self._rng.random() / 2)
        log.warning("%s: %s; retrying in %.1f s", op, why, delay)
        if self.closing.wait(delay):
            raise RemoteError(f"{op}: remote closed while retrying ({why})") from err
