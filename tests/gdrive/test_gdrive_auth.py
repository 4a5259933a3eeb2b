"""Credential files of each kind, each way they can be wrong, and the consent flow."""

from __future__ import annotations

import io
import json
import os
import re
import urllib.parse
import urllib.request

import pytest

from syncd.config import build_config
from syncd.errors import ConfigError, CredentialsError
from syncd.remotes.gdrive_auth import load_credentials, run_auth

from .helpers_gdrive import service_account_key, write_user_creds

SECRET = "1//super-secret-refresh"


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and SECRET not in msg and "BEGIN PRIVATE KEY" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(CredentialsError) as ei:
        load_credentials(tmp_path / "nope.json")
    assert re.search(r"nope.json not found; run `syncd auth CONFIG --client-secrets FILE`", _one_line(ei))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_by_others_gives_the_chmod(tmp_path, drive, mode):
    p = write_user_creds(tmp_path / "c.json", drive, refresh=SECRET, mode=mode)
    with pytest.raises(CredentialsError) as ei:
        load_credentials(p)
    assert f"run: chmod 600 {p}" in _one_line(ei)


def test_unreadable_path(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(CredentialsError) as ei:
        load_credentials(tmp_path / "f" / "c.json")
    assert "cannot read Google Drive credentials file" in _one_line(ei)


def test_a_folder_is_not_a_credentials_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    with pytest.raises(CredentialsError) as ei:
        load_credentials(d)
    assert "not a regular file" in _one_line(ei)


@pytest.mark.parametrize("content, expect", [
    ('{"refresh_token": "' + SECRET + '", ', "not valid JSON"),
    ("[1, 2]", "not a JSON credentials file"),
    ('{"hello": "' + SECRET + '"}', "neither OAuth user credentials"),
    ('{"type": "authorized_user", "client_id": "a", "client_secret": "b"}', "lacks refresh_token"),
    ('{"type": "service_account", "client_email": "x@y", "private_key_id": "1"}', "lacks private_key"),
    ('{"type": "service_account", "client_email": "x@y", "private_key_id": "1", '
     '"private_key": "-----BEGIN PRIVATE KEY-----\\nnonsense\\n-----END PRIVATE KEY-----\\n"}',
     "unreadable private key"),
    ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "not"),
])
def test_malformed_files(tmp_path, content, expect):
    p = tmp_path / "c.json"
    p.write_text(content, encoding="latin-1")
    os.chmod(p, 0o600)
    with pytest.raises(CredentialsError) as ei:
        load_credentials(p)
    assert expect in _one_line(ei)


def test_no_file_outside_colab(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "google.colab", None)  # not importable, as on any VM
    with pytest.raises(CredentialsError) as ei:
        load_credentials(None)
    assert "set syncd_gdrive_credentials" in _one_line(ei)


def test_pydrive2_saved_credentials_are_accepted(make_remote, drive, tmp_path):
    from oauth2client.client import OAuth2Credentials

    c = OAuth2Credentials(None, "client-1", "secret-1", "1//pydrive-style", None, drive.token_uri, "ua")
    drive.add_refresh_token("1//pydrive-style")
    p = tmp_path / "pydrive.json"
    p.write_text(c.to_json())
    os.chmod(p, 0o600)
    r = make_remote(credentials=str(p))
    r.write_bytes("x", b"1")
    assert drive.find("backups/x").data == b"1"


def test_service_account_key_loads(tmp_path, drive):
    p = tmp_path / "sa.json"
    p.write_text(json.dumps(service_account_key(drive)))
    os.chmod(p, 0o600)
    creds, kind = load_credentials(p)
    assert kind == "service"


# ------------------------------------------------------------------ syncd auth


def _secrets(tmp_path, drive):
    p = tmp_path / "client_secrets.json"
    p.write_text(json.dumps({"installed": {
        "client_id": "client-1", "client_secret": "secret-1",
        "auth_uri": drive.url + "auth", "token_uri": drive.token_uri,
        "redirect_uris": ["http://localhost"]}}))
    return p


def _cfg(tmp_path, creds_path):
    return build_config({"output_dir": str(tmp_path / "out"), "syncd_gdrive_credentials": str(creds_path)})


def _lines(*items):
    it = iter(items)

    def read():
        item = next(it, None)
        if item is None:
            raise EOFError
        return item() if callable(item) else item
    return read


def test_run_auth_with_a_pasted_redirect(tmp_path, drive, make_remote):
    drive.auth_codes["4/code-1"] = "1//from-consent"
    dest = tmp_path / "sub" / "gdrive.json"
    out = io.StringIO()
    got = run_auth(_cfg(tmp_path, dest), _secrets(tmp_path, drive), out=out,
                   read_line=_lines("", "http://localhost:1/?state=x&code=4/code-1&scope=drive"))
    assert got == dest and (dest.stat().st_mode & 0o777) == 0o600
    saved = json.loads(dest.read_text())
    assert saved["type"] == "authorized_user" and saved["refresh_token"] == "1//from-consent"
    assert "access_type=offline" in out.getvalue() and "1//from-consent" not in out.getvalue()
    r = make_remote(credentials=str(dest))  # the saved file works as is
    r.write_bytes("k", b"v")
    assert drive.find("backups/k").data == b"v"


def test_run_auth_through_the_loopback_redirect(tmp_path, drive):
    drive.auth_codes["4/code-2"] = "1//via-loopback"
    out = io.StringIO()

    def browser():  # what a browser does after consent: follow redirect_uri with a code
        url = re.search(r"(http://\S+/auth\S*)", out.getvalue()).group(1)
        redirect = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["redirect_uri"]
        with urllib.request.urlopen(redirect + "?code=4/code-2", timeout=5) as resp:
            assert resp.status == 200
        raise EOFError

    dest = tmp_path / "gdrive.json"
    run_auth(_cfg(tmp_path, dest), _secrets(tmp_path, drive), out=out, read_line=_lines(browser))
    assert json.loads(dest.read_text())["refresh_token"] == "1//via-loopback"


def test_run_auth_bad_code(tmp_path, drive):
    dest = tmp_path / "gdrive.json"
    with pytest.raises(CredentialsError, match="refused the authorisation code"):
        run_auth(_cfg(tmp_path, dest), _secrets(tmp_path, drive), out=io.StringIO(),
                 read_line=_lines("not-a-code"))
    assert not dest.exists()


def test_run_auth_needs_a_destination_and_good_secrets(tmp_path, drive):
    cfg = build_config({"output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="syncd_gdrive_credentials"):
        run_auth(cfg, _secrets(tmp_path, drive))
    with pytest.raises(CredentialsError, match="not found"):
        run_auth(_cfg(tmp_path, tmp_path / "c.json"), tmp_path / "missing.json")
    bad = tmp_path / "web.json"
    bad.write_text('{"other": {}}')
    with pytest.raises(CredentialsError, match="Desktop app"):
        run_auth(_cfg(tmp_path, tmp_path / "c.json"), bad)
