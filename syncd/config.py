"""The part of the training config that syncd reads, validated up front.

One JSON file serves the trainer and the daemon. syncd takes the keys below and
ignores every other key, except that an unknown ``syncd_*`` key is an error (a typo
there would silently disable a safety setting). Command-line overrides use the
config's own key names: ``--backup_keep_last 2``.

The keys every remote shares are listed here; a backend's own keys (the
``syncd_gdrive_*`` ones) are declared by that backend and collected from the
remotes registry. Values are checked by ``config_check``, which the trainer uses too.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_check import Spec, check
from .errors import ConfigError
from .remotes.registry import normalise_url, option_specs

DAY_SECONDS = 86400.0


def Key(kind: type, default: Any, **bounds: Any) -> Spec:  # noqa: N802 - reads as the table's type
    """A syncd key: strings are never empty, and a key without a default may be null."""
    return Spec(kind, default, nullable=bounds.pop("nullable", default is None), non_empty=kind is str, **bounds)


# Defaults carry the reason in a comment; units are in the names.
SHARED_KEYS: dict[str, Spec] = {
    "output_dir": Key(str, None),
    "run_name": Key(str, None),  # default: the output folder's name
    # Hugging Face's own default is "keep all"; five full TESS checkpoints are ~7.5 GB.
    # null means Hugging Face's "keep all", as it does for the trainer.
    "save_total_limit": Key(int, 5, minimum=1, nullable=True),
    "gdrive_backup_dir": Key(str, None),
    # Three remote copies fit in free Drive's 15 GB at ~1.5 GB each with room to spare.
    "backup_keep_last": Key(int, 3, minimum=1),
    # The timer is only the safety net behind inotify, so a minute is plenty.
    # At most a day: a longer safety net is no net at all.
    "syncd_interval_seconds": Key(float, 60.0, minimum=0.05, maximum=DAY_SECONDS),
    # Quiet period for checkpoints written without our completion marker.
    # At most a day: a checkpoint quiet that long is finished.
    "syncd_settle_seconds": Key(float, 30.0, minimum=0.0, maximum=DAY_SECONDS),
    # An incomplete folder untouched this long, with a newer complete one, is debris.
    # At most 30 days: beyond that debris would simply never go.
    "syncd_stale_seconds": Key(float, 900.0, minimum=0.0, maximum=30 * DAY_SECONDS),
    # Below this much free space the daemon prunes local checkpoints harder; 0 = off.
    "syncd_min_free_gb": Key(float, 2.0, minimum=0.0),
    # Several files in flight hide per-file latency on network remotes.
    # At most 256 threads: more buys nothing on any remote and exhausts descriptors.
    "syncd_upload_workers": Key(int, 4, minimum=1, maximum=256),
    # Drive's trash still counts toward quota, so delete for real unless asked.
    "syncd_delete_mode": Key(str, "permanent", choices=("permanent", "trash")),
    # Bandwidth cap for uploads in MB/s; 0 = unlimited (a shared uplink may want less).
    # At most 1 TB/s, far above any link, so the bytes-per-second rate stays finite.
    "syncd_bwlimit_mbps": Key(float, 0.0, minimum=0.0, maximum=1e6),
    # Used by the trainer: wait for the final model's commit when training ends.
    "syncd_wait_at_end": Key(bool, True),
    # At most a week: the trainer's end should not hang longer on the network.
    "syncd_wait_timeout_seconds": Key(float, 900.0, minimum=0.0, maximum=7 * DAY_SECONDS),
    # `syncd stop` / SIGTERM: an upload that finishes within this long still commits.
    # 20 s fits inside a spot VM's 30 s notice with room for the process to exit.
    "syncd_stop_grace_seconds": Key(float, 20.0, minimum=0.0, maximum=DAY_SECONDS),
    # Local HTTP endpoint with status JSON and Prometheus metrics; 0 = off.
    "syncd_http_port": Key(int, 0, minimum=0, maximum=65535),
    "syncd_http_host": Key(str, "127.0.0.1"),
    # Secret for HMAC-signed manifests: restore then refuses a remote forged without it.
    "syncd_manifest_key": Key(str, None),
    # torchrun across nodes without a shared disk: one daemon per node, each mirroring its
    # node's part of every checkpoint (parts.py). 1 = one machine, or nodes sharing a disk.
    # Unset: $SYNCD_NODES, else 1. At most 4096 nodes: a bound, not a tested size.
    "syncd_nodes": Key(int, None, minimum=1, maximum=4096),
    # This node's rank among them. Unset: $SYNCD_NODE_RANK, else torchrun's $GROUP_RANK.
    "syncd_node_rank": Key(int, None, minimum=0, maximum=4095),
}
# A backend's own keys (syncd_gdrive_* for gdrive://), declared in syncd/remotes/.
REMOTE_OPTION_KEYS: dict[str, Spec] = option_specs()
KEYS: dict[str, Spec] = {**SHARED_KEYS, **REMOTE_OPTION_KEYS}


@dataclass(frozen=True)
class SyncConfig:
    output_dir: Path
    run_name: str
    save_total_limit: int | None  # None: keep all (Hugging Face's meaning of null)
    remote_url: str | None
    backup_keep_last: int
    interval_seconds: float
    settle_seconds: float
    stale_seconds: float
    min_free_gb: float
    upload_workers: int
    delete_mode: str
    bwlimit_mbps: float
    wait_at_end: bool
    wait_timeout_seconds: float
    stop_grace_seconds: float = 20.0
    # Every backend's option keys by config name, validated; each backend reads its own.
    remote_options: Mapping[str, Any] = field(default_factory=dict)
    manifest_key: str | None = field(default=None, repr=False)
    http_port: int = 0
    http_host: str = "127.0.0.1"
    nodes: int = 1  # parts per checkpoint (parts.py)
    node_rank: int = 0  # which part this output folder holds; run_name is that part's folder
    base_run: str | None = None  # the run's own name when run_name is a part's (node rank > 0)
    source: str = "<dict>"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def state_dir(self) -> Path:
        return self.output_dir / ".syncd"

    @property
    def run(self) -> str:
        """The run's name; ``run_name`` is the folder this output folder mirrors to (its part's)."""
        return self.base_run or self.run_name


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--key", "value", ...]`` to a dict; values are JSON when they parse as JSON."""
    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        flag = items[i]
        if not flag.startswith("--") or len(flag) <= 2:
            raise ConfigError(f"unexpected argument {flag!r}: overrides look like --key value")
        name = flag[2:]
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        elif i + 1 < len(items):
            i += 1
            value = items[i]
        if value is None:
            raise ConfigError(f"--{name} needs a value")
        out[name.replace("-", "_")] = _parse_scalar(value)
        i += 1
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON config; a missing or malformed file is a ConfigError."""
    if "\0" in os.fspath(path):
        raise ConfigError(f"config path must not contain a NUL byte: {os.fspath(path)!r}")
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    if b"\0" in raw:  # valid UTF-8, but JSON never holds a raw NUL: UTF-16 or UTF-32 without a BOM
        at = raw.index(0)
        raise ConfigError(f"config {p} is not UTF-8 text (a NUL byte at offset {at}: UTF-16?); save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows editors) is harmless
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(f"config {p} is not UTF-8 text{hint}: byte 0x{raw[e.start]:02x} at offset {e.start}; "
                          f"save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {p} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {p} must hold a JSON object, not {type(data).__name__}")
    return data


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a folder.

    A folder we are to create or write into cannot live at, or below, a regular file.
    """
    for p in (path, *path.parents):
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError):
            return None  # unreadable: whoever writes there reports it
        return None if stat.S_ISDIR(st.st_mode) else p
    return None


def check_folder_path(path: str | os.PathLike[str], what: str) -> Path:
    """A folder path to create or write: no NUL byte, no file at or above it."""
    text = os.fspath(path)
    if "\0" in text:
        raise ConfigError(f"{what} must not contain a NUL byte: {text!r}")
    p = Path(text).expanduser().absolute()
    blocker = file_in_the_way(p)
    if blocker == p:
        raise ConfigError(f"{what} {p} is a file, not a folder")
    if blocker is not None:
        raise ConfigError(f"{what} {p} cannot be created: {blocker} is a file, not a folder")
    return p


# $NAME, ${NAME} (POSIX shells) and %NAME% (Windows; the TESS fork's output_dir is "%GDRIVE%/...").
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|%([A-Za-z_][A-Za-z0-9_]*)%")


def expand_path(name: str, text: str, environ: Mapping[str, str] | None = None) -> str:
    """A path-valued key with ``~`` and environment variables expanded, as TESS's fork does.

    The fork's run_mlm.py applies expanduser, then expandvars, to output_dir and
    gdrive_backup_dir. Here a variable that is not set is an error naming it, rather
    than a folder literally called ``%GDRIVE%``; the trainer and the daemon expand the
    same way, so both see one folder. URLs (``scheme://...``) are left as written.
    """
    if "://" in text:
        return text
    env = os.environ if environ is None else environ
    expanded = os.path.expanduser(text)

    def value(m: re.Match) -> str:
        var = m.group(1) or m.group(2) or m.group(3)
        if var not in env:
            raise ConfigError(f"config key {name} uses {m.group(0)} but the environment variable {var} is not "
                              f"set: export {var}=<folder> first, or pass --{name} <path>")
        return env[var]

    return _ENV_REF.sub(value, expanded)


def build_config(
    data: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "<dict>",
    base_dir: Path | None = None,
) -> SyncConfig:
    """Validate the keys syncd uses; relative paths resolve against ``base_dir`` (the CWD)."""
    merged = dict(data)
    merged.update(overrides or {})
    unknown = sorted(k for k in merged if k.startswith("syncd_") and k not in KEYS)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]} in {source}")
    values = {name: check(name, spec, merged.get(name, spec.default)) for name, spec in KEYS.items()}
    if not values["output_dir"]:
        raise ConfigError(f"config {source} has no output_dir")
    for name in ("output_dir", "gdrive_backup_dir"):
        if values[name] is not None:
            values[name] = expand_path(name, values[name])
    base = base_dir or Path.cwd()
    output_dir = (base / Path(values["output_dir"]).expanduser()).resolve()
    check_folder_path(output_dir, "output_dir")
    run_name = values["run_name"] or output_dir.name
    if "/" in run_name or run_name in (".", ".."):
        raise ConfigError(f"config key run_name must be a plain name, not {run_name!r}")
    remote = values["gdrive_backup_dir"]
    if remote is not None:
        remote = normalise_url(remote, base)
    from .parts import node_layout, part_run

    nodes, node_rank = node_layout(values["syncd_nodes"], values["syncd_node_rank"])
    return SyncConfig(
        output_dir=output_dir,
        run_name=part_run(run_name, node_rank),
        base_run=run_name if node_rank else None,
        nodes=nodes,
        node_rank=node_rank,
        save_total_limit=values["save_total_limit"],
        remote_url=remote,
        backup_keep_last=values["backup_keep_last"],
        interval_seconds=values["syncd_interval_seconds"],
        settle_seconds=values["syncd_settle_seconds"],
        stale_seconds=values["syncd_stale_seconds"],
        min_free_gb=values["syncd_min_free_gb"],
        upload_workers=values["syncd_upload_workers"],
        delete_mode=values["syncd_delete_mode"],
        bwlimit_mbps=values["syncd_bwlimit_mbps"],
        wait_at_end=values["syncd_wait_at_end"],
        wait_timeout_seconds=values["syncd_wait_timeout_seconds"],
        stop_grace_seconds=values["syncd_stop_grace_seconds"],
        remote_options={name: values[name] for name in REMOTE_OPTION_KEYS},
        manifest_key=values["syncd_manifest_key"],
        http_port=values["syncd_http_port"],
        http_host=values["syncd_http_host"],
        source=source,
        raw=merged,
    )


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] | Mapping[str, Any] = ()) -> SyncConfig:
    """Read, merge overrides and validate; the one entry point for the CLI and trainer."""
    data = read_config_file(path)
    ov = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    return build_config(data, ov, source=str(path))
