"""Helpers shared by the gdrive tests: credential files and test bytes."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from .fake_drive import FakeDrive

CHUNK = 256 * 1024
REFRESH = "1//fake-refresh-token-for-tests"


def write_user_creds(path: Path, drive: FakeDrive, refresh: str = REFRESH, mode: int = 0o600) -> Path:
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "client-1", "client_secret": "secret-1",
        "refresh_token": refresh, "token_uri": drive.token_uri,
    }))
    os.chmod(path, mode)
    return path


_SA_KEY: dict[str, str] = {}


def service_account_key(drive: FakeDrive) -> dict[str, str]:
    if "pem" not in _SA_KEY:  # one RSA key per test session: generating it is the slow part
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _SA_KEY["pem"] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": _SA_KEY["pem"], "client_email": "backup@p.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": drive.token_uri,
    }


def blob(n: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    return random.Random(seed).randbytes(n)
