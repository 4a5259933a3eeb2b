"""A loopback fake of the Google Drive v2 API, for tests and the benchmark.

The real client stack (pydrive2, google-api-python-client, httplib2, oauth2client)
talks HTTP to it; nothing of theirs is mocked. It implements what that stack sends:

    POST   /token                                  refresh_token, jwt-bearer, authorization_code
    GET    /drive/v2/files?q=...                   listing (paged), with optional lag
    GET    /drive/v2/files/<id>[?alt=media]        metadata, or bytes (Range -> 206)
    POST   /drive/v2/files                         metadata-only create (folders)
    PATCH  /drive/v2/files/<id>?addParents&removeParents   rename, move
    POST   /drive/v2/files/<id>/trash              trash (recursive)
    DELETE /drive/v2/files/<id>                    permanent delete (recursive)
    DELETE /drive/v2/files/trash                   emptyTrash
    GET    /drive/v2/about                         quota
    POST   /upload/drive/v2/files?uploadType=resumable      start a session -> Location
    PUT    <session URI>                           chunks (308 + Range), probes, final 200

Fault injection (``fail``, ``drop``, ``stall``, ``expire_tokens_on``, ``hold``), listing
lag (``lag_s``; ``lag()`` keeps everything new out of every client's listings until
``settle()`` releases it, with no sleeping), quota (``quota_limit``, and
``other_services_bytes`` for Gmail and Photos, which share it), the daily upload limit
(``daily_limit_bytes``), revoked refresh tokens (``revoke``), what a person does in the
Drive web page (``move``) and counters (``bytes_received``, ``count``) let tests drive
every failure mode.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FOLDER = "application/vnd.google-apps.folder"
CHUNK_MULTIPLE = 256 * 1024
SA_NO_QUOTA = (
    "Service Accounts do not have storage quota. Leverage shared drives, "
    "or use OAuth delegation instead."
)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HttpFail(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message or reason


@dataclass
class Item:
    id: str
    title: str
    mime: str
    parents: list[str]
    data: bytes = b""
    trashed: bool = False
    drive_id: str | None = None
    created: str = field(default_factory=_now_iso)
    modified: str = field(default_factory=_now_iso)
    size: int = -1  # given when the bytes themselves were not kept
    md5: str = ""

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data)
            self.md5 = hashlib.md5(self.data).hexdigest()

    @property
    def is_folder(self) -> bool:
        return self.mime == FOLDER

    def meta(self, root_id: str) -> dict[str, Any]:
        m: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "title": self.title,
            "mimeType": self.mime,
            "parents": [{"id": p, "isRoot": p == root_id} for p in self.parents],
            "labels": {"trashed": self.trashed},
            "createdDate": self.created,
            "modifiedDate": self.modified,
        }
        if not self.is_folder:
            m["fileSize"] = str(self.size)
            m["md5Checksum"] = self.md5
        if self.drive_id:
            m["driveId"] = self.drive_id
            m["teamDriveId"] = self.drive_id
        return m


@dataclass
class Session:
    id: str
    meta: dict[str, Any]
    total: int
    principal: str
    buf: bytearray | None = field(default_factory=bytearray)  # None: count and hash only
    n: int = 0
    received: int = 0  # every body byte that arrived for this session, re-sent ones too
    md5: Any = field(default_factory=hashlib.md5)
    done_id: str | None = None
    expired: bool = False

    def append(self, data: bytes | memoryview) -> None:
        self.n += len(data)
        self.md5.update(data)
        if self.buf is not None:
            self.buf += data


@dataclass
class Fault:
    kind: str  # request kind it applies to, or "any"
    action: str  # "status" | "drop" | "stall" | "expire"
    times: int | None  # None: forever
    status: int = 500
    reason: str = "backendError"
    after_bytes: int = 0
    seconds: float = 0.0
    skip: int = 0  # let this many matching requests through first


# ---------------------------------------------------------------- q expressions

_TOKEN = re.compile(r"\s*(?:(\()|(\))|'((?:[^'\\]|\\.)*)'|(!=|=|<=|>=|<|>)|([A-Za-z_][A-Za-z0-9_.]*))")


def _tokenize(q: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    q = q.strip()
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m or m.end() == pos:
            raise HttpFail(400, "invalidQuery", f"Invalid query near {q[pos:pos + 20]!r}")
        lp, rp, s, op, word = m.groups()
        if lp:
            out.append(("(", "("))
        elif rp:
            out.append((")", ")"))
        elif s is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", s)))
        elif op:
            out.append(("op", op))
        else:
            out.append(("word", word))
        pos = m.end()
    return out


class _Query:
    """Recursive descent over Drive's q grammar (the subset syncd uses)."""

    FIELDS = {"title", "mimeType", "trashed"}

    def __init__(self, q: str) -> None:
        self.toks = _tokenize(q)
        self.i = 0
        self.tree = self._or()
        if self.i != len(self.toks):
            raise HttpFail(400, "invalidQuery", "Invalid query: trailing tokens")

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self) -> tuple[str, str]:
        t = self._peek()
        if t is None:
            raise HttpFail(400, "invalidQuery", "Invalid query: unexpected end")
        self.i += 1
        return t

    def _or(self):
        terms = [self._and()]
        while self._peek() == ("word", "or"):
            self.i += 1
            terms.append(self._and())
        return ("or", terms)

    def _and(self):
        terms = [self._not()]
        while self._peek() == ("word", "and"):
            self.i += 1
            terms.append(self._not())
        return ("and", terms)

    def _not(self):
        if self._peek() == ("word", "not"):
            self.i += 1
            return ("not", self._not())
        if self._peek() == ("(", "("):
            self.i += 1
            node = self._or()
            if self._take() != (")", ")"):
                raise HttpFail(400, "invalidQuery", "Invalid query: missing )")
            return node
        return self._cmp()

    def _cmp(self):
        left = self._take()
        if left[0] == "str":
            if self._take() != ("word", "in") or self._take() != ("word", "parents"):
                raise HttpFail(400, "invalidQuery", "Invalid query: expected in parents")
            return ("in_parents", left[1])
        if left[0] != "word" or left[1] not in self.FIELDS:
            raise HttpFail(400, "invalidQuery", f"Invalid query: unknown field {left[1]!r}")
        op = self._take()
        if op not in (("op", "="), ("op", "!="), ("word", "contains")):
            raise HttpFail(400, "invalidQuery", f"Invalid query: bad operator {op[1]!r}")
        val = self._take()
        if val[0] == "word" and val[1] in ("true", "false"):
            value: Any = val[1] == "true"
        elif val[0] == "str":
            value = val[1]
        else:
            raise HttpFail(400, "invalidQuery", f"Invalid query: bad value {val[1]!r}")
        return ("cmp", left[1], op[1], value)

    def match(self, meta: dict[str, Any]) -> bool:
        return self._eval(self.tree, meta)

    def _eval(self, node, meta) -> bool:
        kind = node[0]
        if kind == "or":
            return any(self._eval(n, meta) for n in node[1])
        if kind == "and":
            return all(self._eval(n, meta) for n in node[1])
        if kind == "not":
            return not self._eval(node[1], meta)
        if kind == "in_parents":
            return any(p["id"] == node[1] for p in meta["parents"])
        _, name, op, value = node
        actual = meta["labels"]["trashed"] if name == "trashed" else meta[name]
        if op == "=":
            return actual == value
        if op == "!=":
            return actual != value
        return isinstance(actual, str) and str(value) in actual


# ---------------------------------------------------------------- the server


class FakeDrive:
    """State plus a threaded HTTP server on 127.0.0.1; use as a context manager."""

    def __init__(self, keep_content: bool = True) -> None:
        self.keep_content = keep_content  # False: uploads are counted and hashed, not stored
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.root_id = "root-mydrive"
        self.items: dict[str, Item] = {
            self.root_id: Item(self.root_id, "My Drive", FOLDER, []),
        }
        # id -> [(time, meta or None)]: what a lagging listing would have seen then
        self.history: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, str] = {}  # access token -> principal
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> client id
        self.token_grants: dict[str, str] = {}  # access token -> the refresh token it came from
        self.auth_codes: dict[str, str] = {}  # authorization code -> refresh token to issue
        self.faults: list[Fault] = []
        self.count: Counter[str] = Counter()
        self.bytes_received = 0
        self.chunk_offsets: list[int] = []  # first byte of every chunk PUT, in order
        self.lag_s = 0.0
        self.quota_limit: int | None = 15 * 1024**3
        self.other_services_bytes = 0  # Gmail and Photos: they count against the same limit
        self.daily_limit_bytes: int | None = None
        self.uploaded_today = 0
        self.page_size = 100
        self.corrupt_next_upload = False  # flip a stored byte: Drive's md5 then differs
        self.token_lifetime_s = 3600
        self.held = threading.Event()
        self._hold_after: int | None = None
        self._release = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._record(self.items[self.root_id])

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def token_uri(self) -> str:
        return self.url + "token"

    def start(self) -> FakeDrive:
        drive = self

        class Handler(_Handler):
            fake = drive

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

            def process_request(self, request, client_address):
                with drive.lock:
                    drive._conns.add(request)
                super().process_request(request, client_address)

            def handle_error(self, request, client_address):
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)  # a client gone is not news

            def shutdown_request(self, request):
                with drive.lock:
                    drive._conns.discard(request)
                super().shutdown_request(request)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-drive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is None:
            return
        self._server.shutdown()
        with self.lock:
            conns = list(self._conns)
        for c in conns:  # wake handler threads parked on idle keep-alive sockets
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakeDrive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test API

    def new_id(self, prefix: str = "f") -> str:
        return f"{prefix}{next(self._ids):06d}x{hashlib.md5(str(time.time_ns()).encode()).hexdigest()[:8]}"

    def add_refresh_token(self, refresh_token: str, client_id: str = "client-1") -> None:
        with self.lock:
            self.refresh_tokens[refresh_token] = client_id

    def fail(self, kind: str, status: int, reason: str = "", times: int | None = 1, skip: int = 0) -> None:
        """After ``skip`` requests of ``kind``, the next ``times`` answer ``status`` with ``reason``."""
        default = {401: "authError", 403: "forbidden", 429: "rateLimitExceeded"}.get(status, "backendError")
        with self.lock:
            self.faults.append(Fault(kind, "status", times, status=status, reason=reason or default, skip=skip))

    def drop(self, kind: str = "chunk", after_bytes: int = 0, times: int | None = 1) -> None:
        """Close the connection after reading ``after_bytes`` of the request body, no reply."""
        with self.lock:
            self.faults.append(Fault(kind, "drop", times, after_bytes=after_bytes))

    def lose_response(self, kind: str, times: int | None = 1, skip: int = 0) -> None:
        """After ``skip`` requests of ``kind``, do the work, then close the connection instead of answering."""
        with self.lock:
            self.faults.append(Fault(kind, "lose", times, skip=skip))

    def stall(self, kind: str, seconds: float, times: int | None = 1) -> None:
        """Sleep before answering (client timeouts)."""
        with self.lock:
            self.faults.append(Fault(kind, "stall", times, seconds=seconds))

    def expire_tokens_on(self, kind: str = "chunk", times: int | None = 1) -> None:
        """At the next request of ``kind``, every access token expires (-> 401)."""
        with self.lock:
            self.faults.append(Fault(kind, "expire", times))

    def hold(self, after_bytes: int) -> None:
        """Park the first chunk request that arrives once a session holds ``after_bytes``."""
        self._hold_after = after_bytes
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._hold_after = None
        self._release.set()

    def lag(self) -> None:
        """From now on listings (every client's) show nothing new until ``settle()``."""
        self.lag_s = 1e9

    def revoke(self, refresh_token: str) -> None:
        """The user revoked access: the refresh token and its access tokens stop working."""
        with self.lock:
            self.refresh_tokens.pop(refresh_token, None)
            for token in [t for t, r in self.token_grants.items() if r == refresh_token]:
                self.tokens.pop(token, None)

    def move(self, item_id: str, title: str | None = None, parent: str | None = None) -> None:
        """Rename or move an item, as a person does in the Drive web page."""
        with self.lock:
            item = self.items[item_id]
            if title is not None:
                item.title = title
            if parent is not None:
                item.parents = [parent]
            item.modified = _now_iso()
            self._record(item)

    def settle(self) -> None:
        """Make everything so far visible to listings, however large ``lag_s`` is."""
        with self.lock:
            shift = max(1e6, 2 * self.lag_s)
            for versions in self.history.values():
                versions[:] = [(t - shift, m) for t, m in versions]

    def expire_sessions(self) -> None:
        with self.lock:
            for s in self.sessions.values():
                s.expired = True

    def add_shared_drive(self, name: str) -> str:
        with self.lock:
            sid = self.new_id("0A")
            self.items[sid] = Item(sid, name, FOLDER, [], drive_id=sid)
            self._record(self.items[sid])
            return sid

    def add_item(self, parent_id: str, title: str, data: bytes | None = None, folder: bool = False) -> str:
        """Create directly (duplicates allowed, no lag), as another client would."""
        with self.lock:
            parent = self.items[parent_id]
            iid = self.new_id()
            self.items[iid] = Item(iid, title, FOLDER if folder else "application/octet-stream",
                                   [parent_id], data or b"", drive_id=parent.drive_id)
            self._record(self.items[iid])
            return iid

    def children(self, parent_id: str, title: str | None = None, trashed: bool = False) -> list[Item]:
        with self.lock:
            return [i for i in self.items.values()
                    if parent_id in i.parents and i.trashed == trashed and (title is None or i.title == title)]

    def find(self, path: str, root: str | None = None) -> Item | None:
        """Current state by path (titles), first match; for assertions."""
        cur = self.items[root or self.root_id]
        for part in [p for p in path.split("/") if p]:
            kids = self.children(cur.id, part)
            if not kids:
                return None
            cur = kids[0]
        return cur

    def used_bytes(self) -> int:
        with self.lock:
            return sum(i.size for i in self.items.values() if not i.drive_id)

    def trash_bytes(self) -> int:
        with self.lock:
            return sum(i.size for i in self.items.values() if i.trashed and not i.drive_id)

    # ------------------------------------------------------------ internals

    def _record(self, item: Item, gone: bool = False) -> None:
        self.history.setdefault(item.id, []).append(
            (time.monotonic(), None if gone else item.meta(self.root_id)))

    def _visible_metas(self) -> list[dict[str, Any]]:
        """Metadata as a listing sees it: ``lag_s`` behind the truth."""
        if self.lag_s <= 0:
            return [i.meta(self.root_id) for i in self.items.values()]
        horizon = time.monotonic() - self.lag_s
        out = []
        for versions in self.history.values():
            seen = None
            for t, meta in versions:
                if t <= horizon:
                    seen = meta
            if seen is not None:
                out.append(seen)
        return out

    def _take_fault(self, kind: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.kind in (kind, "any") and (f.times is None or f.times > 0):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    def _descendants(self, item_id: str) -> list[Item]:
        out, todo = [], [item_id]
        while todo:
            cur = todo.pop()
            out.append(self.items[cur])
            todo.extend(i.id for i in self.items.values() if cur in i.parents)
        return out

    def _get(self, file_id: str, all_drives: bool) -> Item:
        if file_id == "root":
            file_id = self.root_id
        item = self.items.get(file_id)
        if item is None or (item.drive_id and not all_drives):
            raise HttpFail(404, "notFound", f"File not found: {file_id}")
        return item


_ERROR_MESSAGES = {
    "storageQuotaExceeded": "The user's Drive storage quota has been exceeded.",
    "uploadLimitExceeded": "The user has exceeded their daily upload limit.",
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "authError": "Invalid Credentials",
    "backendError": "Backend Error",
}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDrive
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    # ---------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes | dict | None = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        if getattr(self, "_lose", False):
            self._lose = False
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        if isinstance(body, dict):
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, reason: str, message: str = "") -> None:
        message = message or _ERROR_MESSAGES.get(reason, reason)
        self._send(status, {"error": {"errors": [{"domain": "global", "reason": reason, "message": message}],
                                      "code": status, "message": message}})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _kind(self, path: str, query: dict[str, str]) -> str:
        if path == "/token":
            return "token"
        if path.startswith("/upload/"):
            return "chunk" if "upload_id" in query else "upload_start"
        if path == "/drive/v2/about":
            return "about"
        if path == "/drive/v2/files":
            return "list" if self.command == "GET" else "create"
        if path.startswith("/drive/v2/files/"):
            if query.get("alt") == "media":
                return "media"
            return {"GET": "get", "PATCH": "patch", "DELETE": "delete", "POST": "trash"}.get(self.command, "other")
        return "other"

    def _handle(self) -> None:
        fake = self.fake
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        kind = self._kind(parsed.path, query)
        with fake.lock:
            fake.count[kind] += 1
        fault = fake._take_fault(kind)
        if fault is not None:
            if fault.action == "stall":
                time.sleep(fault.seconds)
            elif fault.action == "drop":
                want = int(self.headers.get("Content-Length") or 0)
                got = self.rfile.read(min(fault.after_bytes, want)) if fault.after_bytes else b""
                if kind == "chunk" and got:
                    self._partial_chunk(query, got)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            elif fault.action == "lose":
                self._lose = True
            elif fault.action == "expire":
                with fake.lock:
                    fake.tokens.clear()
            else:
                self._body()
                self._error(fault.status, fault.reason)
                return
        if kind == "token":
            return self._token()
        principal = self._auth()
        if principal is None:
            self._body()
            return self._error(401, "authError")
        try:
            self._route(kind, parsed.path, query, principal)
        except HttpFail as e:
            self._error(e.status, e.reason, e.message)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: self._handle()  # noqa: E731

    def _auth(self) -> str | None:
        h = self.headers.get("Authorization", "")
        if not h.startswith("Bearer "):
            return None
        with self.fake.lock:
            return self.fake.tokens.get(h[len("Bearer "):])

    # ---------------------------------------------------------- token endpoint

    def _token(self) -> None:
        fake = self.fake
        form = dict(urllib.parse.parse_qsl(self._body().decode()))
        grant = form.get("grant_type", "")
        refresh = None
        with fake.lock:
            if grant == "refresh_token":
                if form.get("refresh_token") not in fake.refresh_tokens:
                    return self._send(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
                principal = "user"
                refreshed_with = form["refresh_token"]
            elif grant == "authorization_code":
                refresh = fake.auth_codes.pop(form.get("code", ""), None)
                if refresh is None:
                    return self._send(400, {"error": "invalid_grant", "error_description": "Malformed auth code."})
                fake.refresh_tokens[refresh] = form.get("client_id", "")
                principal = "user"
            elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                try:
                    payload = form["assertion"].split(".")[1]
                    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                    principal = "sa:" + claims["iss"]
                except (KeyError, IndexError, ValueError):
                    return self._send(400, {"error": "invalid_grant", "error_description": "Invalid JWT."})
            else:
                return self._send(400, {"error": "unsupported_grant_type"})
            token = "ya29.fake-" + fake.new_id("t")
            fake.tokens[token] = principal
            if grant == "refresh_token":
                fake.token_grants[token] = refreshed_with
            elif refresh:
                fake.token_grants[token] = refresh
        body = {"access_token": token, "expires_in": fake.token_lifetime_s, "token_type": "Bearer"}
        if refresh:
            body["refresh_token"] = refresh
        self._send(200, body)

    # ---------------------------------------------------------- Drive routes

    def _route(self, kind: str, path: str, query: dict[str, str], principal: str) -> None:
        fake = self.fake
        all_drives = query.get("supportsAllDrives") == "true" or query.get("supportsTeamDrives") == "true"
        if kind == "upload_start":
            return self._upload_start(query, principal, all_drives)
        if kind == "chunk":
            return self._chunk(query)
        if kind == "about":
            self._body()
            used = fake.used_bytes()
            return self._send(200, {
                "kind": "drive#about",
                "quotaType": "LIMITED" if fake.quota_limit is not None else "UNLIMITED",
                "quotaBytesTotal": str(fake.quota_limit or 0),
                "quotaBytesUsed": str(used),  # Drive's own, its trash included
                "quotaBytesUsedAggregate": str(used + fake.other_services_bytes),
                "quotaBytesUsedInTrash": str(fake.trash_bytes()),
                "rootFolderId": fake.root_id,
            })
        if kind == "list":
            return self._list(query)
        if kind == "create":
            meta = json.loads(self._body() or b"{}")
            with fake.lock:
                item = self._new_item(meta, b"", all_drives)
            return self._send(200, item.meta(fake.root_id))
        if path == "/drive/v2/files/trash" and self.command == "DELETE":
            with fake.lock:
                for item in [i for i in fake.items.values() if i.trashed]:
                    if item.id in fake.items:
                        for d in fake._descendants(item.id):
                            fake.items.pop(d.id, None)
                            fake._record(d, gone=True)
            return self._send(204)
        parts = path[len("/drive/v2/files/"):].split("/")
        body = self._body()
        if parts == ["generateIds"] and self.command == "GET":
            n = int(query.get("maxResults") or 10)
            return self._send(200, {"kind": "drive#generatedIds", "space": "drive",
                                    "ids": [fake.new_id("g") for _ in range(n)]})
        with fake.lock:
            item = fake._get(parts[0], all_drives)
            if kind == "get":
                return self._send(200, item.meta(fake.root_id))
            if kind == "media":
                return self._media(item)
            if kind == "trash" and parts[1:] == ["trash"]:
                for d in fake._descendants(item.id):
                    d.trashed = True
                    fake._record(d)
                return self._send(200, item.meta(fake.root_id))
            if kind == "delete":
                if item.id == fake.root_id:
                    raise HttpFail(403, "cannotDeleteRoot", "The root folder cannot be deleted")
                for d in fake._descendants(item.id):
                    fake.items.pop(d.id, None)
                    fake._record(d, gone=True)
                return self._send(204)
            if kind == "patch":
                meta = json.loads(body or b"{}")
                if "title" in meta:
                    item.title = meta["title"]
                for pid in filter(None, query.get("removeParents", "").split(",")):
                    if pid in item.parents:
                        item.parents.remove(pid)
                for pid in filter(None, query.get("addParents", "").split(",")):
                    fake._get(pid, all_drives)
                    if pid not in item.parents:
                        item.parents.append(pid)
                item.modified = _now_iso()
                fake._record(item)
                return self._send(200, item.meta(fake.root_id))
        raise HttpFail(400, "badRequest", f"unsupported {self.command} {path}")

    def _new_item(self, meta: dict[str, Any], data: bytes, all_drives: bool, size: int = -1, md5: str = "") -> Item:
        fake = self.fake
        parents = [p["id"] for p in meta.get("parents") or [{"id": fake.root_id}]]
        parent_items = [fake._get(p, all_drives) for p in parents]
        parents = [p.id for p in parent_items]
        if meta.get("id") in fake.items or meta.get("id") in {h for h in fake.history if fake.history[h][-1][1] is None}:
            raise HttpFail(409, "duplicate", f"A file already exists with the provided ID ({meta['id']}).")
        item = Item(meta.get("id") or fake.new_id(), meta.get("title") or "Untitled",
                    meta.get("mimeType") or "application/octet-stream", parents, data,
                    drive_id=parent_items[0].drive_id, size=size, md5=md5)
        fake.items[item.id] = item
        fake._record(item)
        return item

    def _list(self, query: dict[str, str]) -> None:
        fake = self.fake
        self._body()
        q = _Query(query.get("q") or "trashed = false")
        include_all = query.get("includeItemsFromAllDrives") == "true" or query.get("includeTeamDriveItems") == "true"
        with fake.lock:
            metas = [m for m in fake._visible_metas()
                     if m["id"] != fake.root_id and not m.get("driveId", "") == m["id"]
                     and (include_all or "driveId" not in m) and q.match(m)]
        metas.sort(key=lambda m: m["id"])
        size = min(int(query.get("maxResults") or fake.page_size), fake.page_size)
        start = int(query.get("pageToken") or 0)
        page = metas[start:start + size]
        body: dict[str, Any] = {"kind": "drive#fileList", "items": page}
        if start + size < len(metas):
            body["nextPageToken"] = str(start + size)
        self._send(200, body)

    def _media(self, item: Item) -> None:
        data = item.data
        rng = self.headers.get("Range")
        if not rng:
            return self._send(200, data, {"Content-Type": "application/octet-stream"})
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
        if not m:
            raise HttpFail(400, "badRange", "bad Range header")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else len(data) - 1
        b = min(b, len(data) - 1)
        if a >= len(data):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        self._send(206, data[a:b + 1], {"Content-Range": f"bytes {a}-{b}/{len(data)}",
                                       "Content-Type": "application/octet-stream"})

    # ---------------------------------------------------------- resumable uploads

    def _upload_start(self, query: dict[str, str], principal: str, all_drives: bool) -> None:
        fake = self.fake
        if query.get("uploadType") != "resumable":
            self._body()
            raise HttpFail(400, "badRequest", "only resumable uploads are implemented")
        meta = json.loads(self._body() or b"{}")
        total = int(self.headers.get("X-Upload-Content-Length", "-1"))
        if total < 0:
            raise HttpFail(400, "badRequest", "X-Upload-Content-Length is required")
        with fake.lock:
            parents = [fake._get(p["id"], all_drives) for p in meta.get("parents") or [{"id": fake.root_id}]]
            in_shared = parents[0].drive_id is not None
            if not in_shared:
                if principal.startswith("sa:"):
                    raise HttpFail(403, "storageQuotaExceeded", SA_NO_QUOTA)
                if fake.quota_limit is not None and \
                        fake.used_bytes() + fake.other_services_bytes + total > fake.quota_limit:
                    raise HttpFail(403, "storageQuotaExceeded")
            if fake.daily_limit_bytes is not None and fake.uploaded_today + total > fake.daily_limit_bytes:
                raise HttpFail(403, "uploadLimitExceeded")
            sid = fake.new_id("u")
            fake.sessions[sid] = Session(sid, meta | {"_all_drives": all_drives}, total, principal,
                                         bytearray() if fake.keep_content else None)
        host, port = self.server.server_address[:2]
        self._send(200, b"", {"Location": f"http://{host}:{port}/upload/drive/v2/files?uploadType=resumable&upload_id={sid}"})

    def _partial_chunk(self, query: dict[str, str], got: bytes) -> None:
        """A dropped chunk: keep what arrived, rounded down to 256 KiB, as Drive may."""
        fake = self.fake
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", self.headers.get("Content-Range", ""))
        with fake.lock:
            s = fake.sessions.get(query.get("upload_id", ""))
            if s is None or m is None or int(m.group(1)) != s.n:
                return
            keep = len(got) // CHUNK_MULTIPLE * CHUNK_MULTIPLE
            s.append(memoryview(got)[:keep])
            fake.bytes_received += len(got)
            s.received += len(got)

    def _chunk(self, query: dict[str, str]) -> None:
        fake = self.fake
        with fake.lock:
            s = fake.sessions.get(query.get("upload_id", ""))
        if s is None or s.expired:
            self._body()
            raise HttpFail(404, "notFound", "Upload session not found or expired")
        cr = self.headers.get("Content-Range", "")
        if self._hold_check(s):
            self._body()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = self._body()
        with fake.lock:
            if s.done_id is not None:  # a probe or a re-sent last chunk: the file, again
                return self._send(200, fake.items[s.done_id].meta(fake.root_id))
            fake.bytes_received += len(data)
            s.received += len(data)
            if cr.startswith("bytes */"):  # status probe, or the end of an empty file
                pass
            elif cr:
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr)
                if not m:
                    raise HttpFail(400, "badRequest", f"bad Content-Range {cr!r}")
                first, last = int(m.group(1)), int(m.group(2))
                fake.chunk_offsets.append(first)
                if last - first + 1 != len(data):
                    raise HttpFail(400, "badRequest", "Content-Range does not match the body")
                if first > s.n:
                    raise HttpFail(400, "badRequest", f"chunk starts at {first}, have {s.n}")
                final = last + 1 == s.total
                if not final and len(data) % CHUNK_MULTIPLE:
                    raise HttpFail(400, "badRequest", "chunk size is not a multiple of 256 KiB")
                s.append(memoryview(data)[s.n - first:])  # overlap with what we have is ignored
            else:
                fake.chunk_offsets.append(s.n)
                s.append(data)
            if fake.daily_limit_bytes is not None:
                fake.uploaded_today += len(data)
            if s.n > s.total:
                raise HttpFail(400, "badRequest", "more bytes than announced")
            if s.n < s.total:
                hdr = {"Range": f"bytes=0-{s.n - 1}"} if s.n else {}
                return self._send(308, b"", hdr)
            meta = {k: v for k, v in s.meta.items() if not k.startswith("_")}
            if s.buf is None:
                item = self._new_item(meta, b"", s.meta["_all_drives"], size=s.n, md5=s.md5.hexdigest())
            else:
                if fake.corrupt_next_upload and s.buf:
                    fake.corrupt_next_upload = False
                    s.buf[0] ^= 0xFF
                item = self._new_item(meta, bytes(s.buf), s.meta["_all_drives"])
            s.done_id = item.id
            s.buf = bytearray()
        self._send(200, item.meta(fake.root_id))

    def _hold_check(self, s: Session) -> bool:
        """Park this request while a test kills the client; True: drop it afterwards."""
        fake = self.fake
        limit = fake._hold_after
        if limit is None or s.n < limit:
            return False
        fake.held.set()
        fake._release.wait(30)
        return True
