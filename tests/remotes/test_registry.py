"""The registry: which backend serves a URL, and which config keys each backend owns."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from syncd import config
from syncd.config_check import Spec
from syncd.errors import ConfigError
from syncd.remotes import registry
from syncd.remotes.base import Capabilities
from syncd.remotes.gdrive_options import OPTIONS as GDRIVE_OPTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("url", "backend"), [
    ("/mnt/drive/backups", "local"),
    ("backups", "local"),
    ("file:///mnt/backups", "local"),
    ("gdrive://tess/backups", "gdrive"),
    ("GDrive://tess", "gdrive"),
    ("s3://bucket/prefix", "fsspec"),
    ("memory://somewhere", "fsspec"),
])
def test_each_url_goes_to_its_backend(url, backend):
    assert registry.backend_for(url).name == backend


def test_an_unknown_scheme_is_one_line():
    with pytest.raises(ConfigError) as ei:
        registry.backend_for("nosuch://x/y")
    assert str(ei.value) == "unsupported remote URL scheme nosuch:// in gdrive_backup_dir"


def test_urls_are_written_down_by_their_backend(tmp_path):
    assert registry.normalise_url("sub/../b", tmp_path) == str(tmp_path / "b")
    assert registry.normalise_url("file:///x/../y", tmp_path) == "/y"
    assert registry.normalise_url("gdrive://a//b", tmp_path) == "gdrive://a//b"


def test_drive_keys_are_declared_by_the_drive_backend_and_collected_by_the_config():
    assert not any(k.startswith("syncd_gdrive_") for k in config.SHARED_KEYS)
    assert registry.backend_for("gdrive://x").options is GDRIVE_OPTIONS
    assert set(GDRIVE_OPTIONS) == {"syncd_gdrive_credentials", "syncd_gdrive_root_id", "syncd_gdrive_root_url",
                                   "syncd_gdrive_chunk_mb"}
    assert config.KEYS == {**config.SHARED_KEYS, **registry.option_specs()}


def test_a_registered_backend_serves_its_scheme_and_brings_its_keys(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_BACKENDS", list(registry._BACKENDS))
    opened = []
    extra = registry.Backend("toy", lambda s: s == "toy", lambda url, cfg: opened.append((url, dict(cfg.remote_options))),
                             options={"syncd_toy_level": Spec(int, 3, minimum=1)})
    registry.register(extra)
    assert registry.backend_for("toy://a").name == "toy"
    assert registry.backend_for("s3://b").name == "fsspec"  # the catch-all stays last
    assert registry.option_specs()["syncd_toy_level"].default == 3
    with pytest.raises(ValueError, match="syncd_gdrive_chunk_mb is already declared"):
        registry.register(registry.Backend("twin", lambda s: s == "twin", extra.open,
                                           options={"syncd_gdrive_chunk_mb": Spec(float, 1.0)}))


def test_the_drive_chunk_is_checked_with_the_drive_backends_spec(tmp_path):
    base = {"output_dir": str(tmp_path / "out")}
    with pytest.raises(ConfigError) as ei:
        config.build_config({**base, "syncd_gdrive_chunk_mb": 0.3})
    assert str(ei.value) == "config key syncd_gdrive_chunk_mb must be a multiple of 0.25 (256 KiB), not 0.3"
    cfg = config.build_config({**base, "syncd_gdrive_chunk_mb": 2, "syncd_gdrive_root_id": "abc"})
    assert cfg.remote_options == {"syncd_gdrive_credentials": None, "syncd_gdrive_root_id": "abc",
                                  "syncd_gdrive_root_url": None, "syncd_gdrive_chunk_mb": 2.0}


def _imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute names, TYPE_CHECKING blocks and late imports included."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_nothing_the_config_imports_imports_the_config():
    # The loop config -> remotes -> gdrive/gdrive_auth -> config is gone: follow every import
    # from syncd.config (late ones and TYPE_CHECKING ones too); none leads back to it.
    modules = {_module_of(p): p for p in (ROOT / "syncd").rglob("*.py")}

    def deps_of(module: str) -> set[str]:
        out = set()
        for name in _imports_of(modules[module]):
            parts = name.split(".")  # importing a.b.c runs a.b first
            out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & modules.keys()
        return out

    reached, todo = set(), list(deps_of("syncd.config"))
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(deps_of(module))
    assert {"syncd.remotes.registry", "syncd.remotes.gdrive", "syncd.remotes.gdrive_auth"} <= reached
    assert "syncd.config" not in reached
    for name in ("config_check.py", "hashing.py"):
        assert not {m for m in _imports_of(ROOT / "syncd" / name) if m.startswith("syncd.remotes")}, name


def test_checking_a_drive_config_imports_no_backend_library():
    code = ("import sys; from syncd.config import build_config; "
            "build_config({'output_dir': '/tmp/o', 'gdrive_backup_dir': 'gdrive://a'}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydrive2', 'googleapiclient', 'fsspec', 's3fs', 'torch', 'transformers') "
            "or m in ('syncd.remotes.gdrive', 'syncd.remotes.gdrive_auth')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_remote_builds_each_backend_from_the_config(tmp_path, s3_bucket):
    from syncd.remotes import open_remote
    from syncd.remotes.fsspec_remote import FsspecRemote
    from syncd.remotes.local import LocalRemote

    def opened(url: str):
        cfg = config.build_config({"output_dir": str(tmp_path / "out"), "gdrive_backup_dir": url}, base_dir=tmp_path)
        remote = open_remote(cfg)
        remote.close()
        return type(remote), remote.capabilities

    assert opened("backups") == (LocalRemote, LocalRemote.capabilities)
    # S3 computes an md5 (the ETag) of what it stores; a memory filesystem computes none.
    assert opened(f"s3://{s3_bucket}/p") == (FsspecRemote, Capabilities(server_md5=True))
    assert opened("memory://reg/p") == (FsspecRemote, Capabilities())
    with pytest.raises(ConfigError, match="no remote configured"):
        open_remote(config.build_config({"output_dir": str(tmp_path / "out")}))
