"""Credentials for the Drive API remote, and the one-time consent flow.

``syncd_gdrive_credentials`` names one JSON file, mode 0600, of one of these kinds:

    {"type": "authorized_user", "client_id", "client_secret", "refresh_token", "token_uri"}
        written by ``syncd auth CONFIG --client-secrets FILE`` (``run_auth``); the mode
        with storage quota, and the one file a fresh VM needs for a restore.
    {"_class": "OAuth2Credentials", ...}
        what pydrive2's ``SaveCredentialsFile`` writes; accepted as is.
    {"type": "service_account", "client_email", "private_key", ...}
        a service-account key: works on Shared Drives only (no quota in My Drive).

With no file set, inside Colab, the runtime's own credentials (after
``google.colab.auth.authenticate_user()`` in a notebook cell).

Every failure here is a ``CredentialsError`` with one line that names the file and the
fix. No token, secret or key ever goes into a message or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError, CredentialsError
from ..fsutil import atomic_write_json
from .gdrive_options import GDriveOptions

if TYPE_CHECKING:
    from .registry import RemoteSettings

log = logging.getLogger(__name__)

DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
AUTH_HINT = "run `syncd auth CONFIG --client-secrets FILE` to create it"


def ensure_oauth2client_importable() -> None:
    """Keep a broken pyOpenSSL from taking oauth2client (and pydrive2) down with it.

    oauth2client picks pyOpenSSL for signing at import time if it imports. A pyOpenSSL
    older than the installed ``cryptography`` fails with AttributeError rather than
    ImportError, which oauth2client does not expect. Hide it then, so oauth2client
    falls back to its pure-Python RSA signer (only service accounts sign anything).
    """
    if sys.modules.get("OpenSSL", False) is None or "oauth2client.crypt" in sys.modules:
        return
    try:
        import OpenSSL.crypto  # noqa: F401
    except ImportError:
        return
    except Exception as e:  # noqa: BLE001 - any failure here means "unusable"
        log.debug("pyOpenSSL is unusable (%s); oauth2client will sign with rsa", type(e).__name__)
        for name in [m for m in sys.modules if m == "OpenSSL" or m.startswith("OpenSSL.")]:
            del sys.modules[name]
        sys.modules["OpenSSL"] = None  # type: ignore[assignment]


def read_credentials_file(path: Path) -> dict[str, Any]:
    """The parsed JSON of a credential file that exists, is ours alone, and is well formed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CredentialsError(f"Google Drive credentials file {path} not found; {AUTH_HINT}") from None
    except OSError as e:
        raise CredentialsError(f"cannot read Google Drive credentials file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"Google Drive credentials {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CredentialsError(
            f"Google Drive credentials file {path} is readable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CredentialsError(f"cannot read Google Drive credentials file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"Google Drive credentials file {path} is not a JSON credentials file") from None
    try:
        data = json.loads(text)
    except ValueError:
        # never echo the content: it may hold a secret
        raise CredentialsError(f"Google Drive credentials file {path} is not valid JSON; {AUTH_HINT}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"Google Drive credentials file {path} is not a JSON credentials file")
    return data


def _require(data: dict[str, Any], keys: tuple[str, ...], path: Path, kind: str) -> None:
    missing = [k for k in keys if not isinstance(data.get(k), str) or not data.get(k)]
    if missing:
        raise CredentialsError(
            f"Google Drive credentials file {path} looks like {kind} but lacks {', '.join(missing)}")


def load_credentials(path: str | os.PathLike[str] | None) -> tuple[Any, str]:
    """oauth2client credentials for ``path`` (or Colab's) and their kind ("user" or "service")."""
    if path is None:
        return _colab_credentials(), "user"
    p = Path(path).expanduser()
    data = read_credentials_file(p)
    ensure_oauth2client_importable()
    from oauth2client.client import OAuth2Credentials
    from oauth2client.service_account import ServiceAccountCredentials

    kind = data.get("type")
    if kind == "service_account":
        _require(data, ("client_email", "private_key", "private_key_id"), p, "a service-account key")
        try:
            creds = ServiceAccountCredentials.from_json_keyfile_dict(
                data, scopes=[DRIVE_SCOPE], token_uri=data.get("token_uri") or GOOGLE_TOKEN_URI)
            creds._private_key_pkcs8_pem  # noqa: B018 - parsed above; touch to fail early
        except Exception as e:  # a broken PEM: rsa, pyasn1 and OpenSSL all raise their own
            raise CredentialsError(
                f"Google Drive service-account key {p} has an unreadable private key ({type(e).__name__})") from None
        return creds, "service"
    if kind == "authorized_user":
        _require(data, ("client_id", "client_secret", "refresh_token"), p, "OAuth user credentials")
        creds = OAuth2Credentials(
            access_token=None, client_id=data["client_id"], client_secret=data["client_secret"],
            refresh_token=data["refresh_token"], token_expiry=None,
            token_uri=data.get("token_uri") or GOOGLE_TOKEN_URI, user_agent="tessync-syncd",
            scopes=[DRIVE_SCOPE])
        return creds, "user"
    if data.get("_class") == "OAuth2Credentials" or "refresh_token" in data:
        _require(data, ("client_id", "client_secret", "refresh_token"), p, "OAuth user credentials")
        try:
            creds = OAuth2Credentials.from_json(json.dumps(data))
        except (KeyError, ValueError, TypeError):
            raise CredentialsError(f"Google Drive credentials file {p} is a malformed OAuth credentials file; {AUTH_HINT}") from None
        return creds, "user"
    raise CredentialsError(
        f"Google Drive credentials file {p} is neither OAuth user credentials (with a refresh token) "
        f"nor a service-account key; {AUTH_HINT}")


def _colab_credentials() -> Any:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        raise CredentialsError(
            "no Google Drive credentials: set syncd_gdrive_credentials in the config "
            f"(OAuth: {AUTH_HINT}; or a service-account key for a Shared Drive)") from None
    ensure_oauth2client_importable()
    from oauth2client.client import ApplicationDefaultCredentialsError, GoogleCredentials

    try:
        creds = GoogleCredentials.get_application_default()
    except ApplicationDefaultCredentialsError:
        raise CredentialsError(
            "no Colab credentials yet: run `from google.colab import auth; auth.authenticate_user()` "
            "in a notebook cell, then start syncd again") from None
    return creds.create_scoped([DRIVE_SCOPE]) if creds.create_scoped_required() else creds


def describe_refresh_error(err: Exception, path: str | None) -> str:
    """One line for a rejected credential, naming the file, never the token."""
    where = f" in {path}" if path else ""
    reason = str(err).split(":", 1)[0].strip() or type(err).__name__
    if len(reason) > 40 or " " in reason:  # keep only Google's short error code
        reason = type(err).__name__
    return f"Google refused the Drive credentials{where} ({reason}); {AUTH_HINT} again"


# ------------------------------------------------------------------ consent flow


def _read_client_secrets(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"client secrets file {path} not found (download it from the Google Cloud console)") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise CredentialsError(f"client secrets file {path} is not a readable JSON file") from None
    section = data.get("installed") or data.get("web") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.get("client_id") or not section.get("client_secret"):
        raise CredentialsError(
            f"client secrets file {path} is not an OAuth client of type Desktop app "
            "(expected an \"installed\" section with client_id and client_secret)")
    return section


class _RedirectHandler(BaseHTTPRequestHandler):
    codes: queue.Queue[str]

    def do_GET(self) -> None:  # noqa: N802
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        ok = "code" in query
        if ok:
            self.codes.put(query["code"])
        body = (b"tessync: authorised, you can close this tab." if ok
                else b"tessync: no authorisation code in this request.")
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _code_from_line(line: str) -> str | None:
    line = line.strip()
    if not line:
        return None
    if "code=" in line:
        query = urllib.parse.urlsplit(line).query or line
        return dict(urllib.parse.parse_qsl(query)).get("code")
    return line


def run_auth(
    cfg: RemoteSettings,
    client_secrets: Path,
    *,
    read_line: Callable[[], str] = input,
    out: TextIO | None = None,
    open_browser: bool = False,
    timeout_s: float = 600.0,
) -> Path:
    """The command-line consent flow: print a URL, take the code, save a refresh token.

    The redirect goes to a loopback port that this function listens on; on a machine
    without a browser, open the URL elsewhere and paste the address the browser was
    sent to (or just its ``code``) here. Saves ``syncd_gdrive_credentials`` with mode
    0600, atomically, and returns its path.
    """
    ensure_oauth2client_importable()
    from oauth2client.client import FlowExchangeError, OAuth2WebServerFlow

    out = out or sys.stderr
    credentials = GDriveOptions.of(cfg.remote_options).credentials
    if not credentials:
        raise ConfigError("set syncd_gdrive_credentials in the config to the file where syncd auth saves credentials")
    dest = Path(credentials).expanduser()
    secrets = _read_client_secrets(Path(client_secrets))
    codes: queue.Queue[str] = queue.Queue()
    handler = type("Handler", (_RedirectHandler,), {"codes": codes})
    server = HTTPServer(("127.0.0.1", 0), handler)
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serve.start()
    try:
        redirect = f"http://localhost:{server.server_address[1]}/"
        token_uri = secrets.get("token_uri") or GOOGLE_TOKEN_URI
        flow = OAuth2WebServerFlow(
            secrets["client_id"], secrets["client_secret"], DRIVE_SCOPE, redirect_uri=redirect,
            auth_uri=secrets.get("auth_uri") or GOOGLE_AUTH_URI, token_uri=token_uri,
            access_type="offline", prompt="consent")
        url = flow.step1_get_authorize_url()
        print("Open this URL in a browser and allow access to Google Drive:\n\n    "
              f"{url}\n\nIf the browser ends on an error page at localhost, paste that page's "
              "full address (or its code) here:", file=out, flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

        def read_stdin() -> None:
            while True:
                try:
                    line = read_line()
                except (EOFError, OSError):
                    return
                code = _code_from_line(line)
                if code:
                    codes.put(code)
                    return

        threading.Thread(target=read_stdin, daemon=True, name="syncd-auth-stdin").start()
        try:
            code = codes.get(timeout=timeout_s)
        except queue.Empty:
            raise CredentialsError("gave up waiting for the authorisation code") from None
        import httplib2

        try:
            creds = flow.step2_exchange(code, http=httplib2.Http(timeout=60))
        except FlowExchangeError as e:
            raise CredentialsError(f"Google refused the authorisation code ({describe_code(e)})") from None
    finally:
        server.shutdown()
        server.server_close()
        serve.join(5)
    if not creds.refresh_token:
        raise CredentialsError(
            "Google returned no refresh token; remove tessync's access at "
            "https://myaccount.google.com/permissions and run syncd auth again")
    atomic_write_json(dest, {
        "type": "authorized_user",
        "client_id": secrets["client_id"],
        "client_secret": secrets["client_secret"],
        "refresh_token": creds.refresh_token,
        "token_uri": token_uri,
    }, mode=0o600)
    print(f"Saved Google Drive credentials to {dest} (mode 0600). Copy this one file to any "
          "machine that should restore from Drive.", file=out, flush=True)
    return dest


def describe_code(err: Exception) -> str:
    text = str(err).strip()
    return text if text and len(text) <= 60 and "ya29" not in text else type(err).__name__
