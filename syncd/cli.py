"""The ``syncd`` command line. See ``syncd --help`` and DESIGN.md's command table.

Exit status, for every command: 0 done; 1 ``wait`` timed out (or another failure
without a code of its own); 2 bad config, flag or credentials; 3 the remote failed;
4 remote contents fail their manifest; 5 nothing committed to restore; 6 another
daemon owns the output folder; 7 ``wait`` found no daemon running (nor starting)
while something is still uncommitted; 130 interrupted; 141 stdout was closed (``| head``).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import api, completeness, reconcile, verify
from .config import (
    KEYS,
    SyncConfig,
    build_config,
    check_folder_path,
    load_config,
    parse_overrides,
    read_config_file,
)
from .errors import ConfigError, IntegrityError, LockedError, NoDaemon, RemoteError, SyncdError
from .fsutil import read_json
from .locking import prepare_state_dir, running_pid
from .remotes import open_remote
from .remotes.base import join

log = logging.getLogger("syncd")

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 120.0
# `syncd wait` right after (or during) `syncd start`: the new process needs a moment
# (imports, then the lock) before it shows as running.
START_GRACE_SECONDS = 5.0
WAIT_SLICE_SECONDS = 10.0  # how often a long `syncd wait` checks that the daemon still runs
WAIT_TIMED_OUT = 1
# The detached daemon's log rotates at this size, keeping LOG_BACKUPS older files
# (syncd.log.1 ... .3): 40 MB at most. SYNCD_LOG_MAX_BYTES overrides the size.
LOG_MAX_BYTES = 10_000_000
LOG_BACKUPS = 3


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tessync")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _load(args: argparse.Namespace) -> SyncConfig:
    data = read_config_file(args.config)
    overrides = parse_overrides(args.overrides)
    for key in overrides:
        if key not in KEYS and key not in data:
            raise ConfigError(f"unknown option --{key}: not a syncd key nor a key of {args.config}")
    return load_config(args.config, overrides)


class _DaemonLogHandler(logging.handlers.RotatingFileHandler):
    """The detached daemon's ``syncd.log``, rotated by size.

    stdout and stderr (a traceback, the last error line) are pointed at the current
    file too, also after each rotation, so nothing keeps writing into ``syncd.log.1``.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=LOG_BACKUPS, encoding="utf-8")
        self._follow()

    def doRollover(self) -> None:  # noqa: N802 - logging's name
        super().doRollover()
        self._follow()

    def _follow(self) -> None:
        if self.stream is None:
            return
        for f in (sys.stdout, sys.stderr):
            f.flush()
            os.dup2(self.stream.fileno(), f.fileno())


def _log_max_bytes() -> int:
    text = os.environ.get("SYNCD_LOG_MAX_BYTES")
    if not text:
        return LOG_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"SYNCD_LOG_MAX_BYTES must be a whole number of bytes, not {text!r}") from None
    if value < 1000:
        raise ConfigError(f"SYNCD_LOG_MAX_BYTES must be at least 1000, not {value}")
    return value


def _setup_logging(level: int, log_file: str | None = None) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if log_file:
        handler: logging.Handler = _DaemonLogHandler(Path(log_file), _log_max_bytes())
        handler.setFormatter(logging.Formatter(fmt))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    # "skipped: maximum number of running instances" is by design: passes never overlap.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    for noisy in ("googleapiclient", "oauth2client", "botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- run / start / stop -----------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon  # keeps `syncd status` free of watchdog and APScheduler imports

    cfg = _load(args)
    daemon = Daemon(cfg, poll=args.poll)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with daemon:
        while not daemon.wait(1.0):
            pass
    if stop["signal"]:
        log.info("stopped by %s", signal.Signals(stop["signal"]).name)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    cfg = _load(args)
    pid = running_pid(cfg.state_dir)
    if pid is not None:
        raise LockedError(f"syncd is already running for {cfg.output_dir} (pid {pid})")
    prepare_state_dir(cfg.state_dir)  # a read-only output folder is one line, exit 2
    log_path = cfg.state_dir / "syncd.log"
    cmd = [sys.executable, "-m", "syncd", "run", str(Path(args.config).resolve()), *args.overrides,
           "--log-file", str(log_path)]
    if args.poll:
        cmd.append("--poll")
    # Relative paths in the config resolve against the caller's directory: keep it.
    with open(log_path, "ab") as logf, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=logf, stderr=logf, start_new_session=True,
                                cwd=os.getcwd())
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = _last_error_line(log_path)
            err = SyncdError(f"syncd failed to start: {last} (log: {log_path})")
            if proc.returncode in (2, 3, 4, 5, 6):  # the daemon's own verdict: lost a lock race, bad remote
                err.exit_code = proc.returncode
            raise err
        status = read_json(cfg.state_dir / "status.json", default={}) or {}
        if running_pid(cfg.state_dir) == proc.pid and status.get("pid") == proc.pid:
            print(f"syncd started (pid {proc.pid}); log: {log_path}")
            return 0
        time.sleep(0.1)
    raise SyncdError(f"syncd did not report ready within {START_TIMEOUT_SECONDS:.0f}s (log: {log_path})")


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if "syncd: error:" in ln or "ERROR" in ln:
            return ln.split("syncd: error:", 1)[-1].strip()
    return lines[-1] if lines else "no log"


def cmd_stop(args: argparse.Namespace) -> int:
    cfg = _load(args)
    pid = running_pid(cfg.state_dir)
    if pid is None:
        print(f"syncd is not running for {cfg.output_dir}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if running_pid(cfg.state_dir) is None:
            print(f"syncd stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    raise SyncdError(f"syncd (pid {pid}) did not stop within {args.timeout:.0f}s")


# -- status / list ----------------------------------------------------------
def _gather(cfg: SyncConfig) -> dict:
    """Everything status shows, as plain data (the --json output)."""
    now = time.time()
    pid = running_pid(cfg.state_dir)
    daemon = read_json(cfg.state_dir / "status.json", default={}) or {}
    rows: dict[str, dict] = {}
    verdicts = completeness.from_status(daemon) if pid else {}
    for c in api.judged_local(cfg, verdicts):
        rows[c.name] = {
            "name": c.name, "step": None if c.is_final else c.step,
            "local": _local_text(c, daemon if pid else None),
            "local_bytes": c.size_bytes, "age_seconds": now - c.newest_mtime if c.files else None,
            "remote": None, "remote_bytes": None,
        }
    remote_error = None
    quota = None
    if cfg.remote_url:
        try:
            remote = open_remote(cfg)
            # A look, not a job: a remote answering errors that may pass is reported in seconds.
            try:
                with remote.briefly():
                    snap = api.index_for(cfg, remote).scan()
                    copies = snap.restorable()
                    stale = set(api.pending(cfg, snap, include_final=True, verdicts=verdicts)) if pid is None else set()
                    for e in snap:
                        row = rows.setdefault(e.base, {"name": e.base, "step": e.step, "local": None,
                                                       "local_bytes": None, "age_seconds": None,
                                                       "remote": None, "remote_bytes": None})
                        if copies.get(e.base) is e:
                            row["remote"], row["remote_bytes"] = "committed", e.manifest.size_bytes
                            if e.name != e.base:
                                row["remote"] = f"committed as {e.name}"
                        elif row["remote"] is None or not row["remote"].startswith("committed"):
                            row["remote"] = _remote_state_text(e)
                    for name in stale:
                        if name in rows and (rows[name]["remote"] or "").startswith("committed") \
                                and rows[name]["local"] == "complete":
                            rows[name]["remote"] = "stale (local copy differs)"
                    if snap.io_errors:
                        remote_error = "some remote reads failed: " + "; ".join(snap.io_errors[:3])
                    if remote.capabilities.quota:
                        q = remote.quota()
                        if q is not None:
                            quota = {"limit_bytes": q.limit_bytes, "used_bytes": q.used_bytes,
                                     "trash_bytes": q.trash_bytes, "free_bytes": q.free_bytes}
            finally:
                remote.close()
        except SyncdError as e:
            remote_error = str(e)
    current = daemon.get("current") if pid else None
    for name in daemon.get("queue", []) if pid else []:
        if name in rows and rows[name]["remote"] != "committed":
            rows[name]["remote"] = "queued"
    if current and current.get("name") in rows:
        rows[current["name"]]["remote"] = (
            f"uploading {_human_bytes(current.get('bytes_done'))}/{_human_bytes(current.get('bytes_total'))}")
    try:
        import shutil

        du = shutil.disk_usage(cfg.output_dir if cfg.output_dir.exists() else cfg.output_dir.parent)
        disk = {"free_bytes": du.free, "total_bytes": du.total}
    except OSError:
        disk = None
    for name, message in (daemon.get("errors") or {}).items() if pid else ():
        if name in rows:
            rows[name]["error"] = message
    for name in (daemon.get("stale") or []) if pid else ():
        if name in rows:
            rows[name]["remote"] = "stale (local copy differs; uploading again)"
    for folder, message in (daemon.get("damaged") or {}).items() if pid else ():
        base = folder.split(".v")[0]
        if base in rows:
            rows[base]["remote"] = "damaged (repairing from the local copy)"
            rows[base]["error"] = message
    best = daemon.get("best_step") if pid else reconcile.best_step(
        [c for c in api.judged_local(cfg, {}) if not c.is_final])
    for row in rows.values():
        row["best"] = best is not None and row["step"] == best
    order = sorted(rows.values(), key=lambda r: (r["step"] is None, r["step"] or 0), reverse=True)
    return {
        "output_dir": str(cfg.output_dir), "run": cfg.run_name, "remote": cfg.remote_url,
        "daemon": {"running": pid is not None, "pid": pid, "started": daemon.get("started") if pid else None,
                   "uploaded_bytes": daemon.get("uploaded_bytes"), "commits": daemon.get("commits"),
                   "failures": daemon.get("failures")},
        "last_error": daemon.get("last_error"), "last_error_at": daemon.get("last_error_at"),
        "remote_error": remote_error, "queue": daemon.get("queue", []) if pid else [],
        "current": current, "disk": disk, "quota": quota, "checkpoints": order,
        "lag": {"steps": daemon.get("lag_steps"), "seconds": daemon.get("lag_seconds")} if pid else None,
        "http_port": daemon.get("http_port") if pid else None,
        "identity": daemon.get("identity") if pid else None, "run_id": daemon.get("run_id") if pid else None,
        "space": daemon.get("space") if pid else None, "best_step": best,
    }


def _local_text(c, daemon: dict | None) -> str:
    """A local folder's completeness as the running daemon judged it (completeness.py)."""
    published = ((daemon or {}).get("local") or {}).get(c.name)
    if isinstance(published, dict) and isinstance(published.get("text"), str):
        return published["text"]
    if c.reason == completeness.AWAITING_QUIET:
        return "incomplete (settling: no daemon is watching it)" if daemon is None else "incomplete (settling)"
    return completeness.verdict_text(c)


def _remote_state_text(e) -> str:
    if e.owner == "unreadable":
        return "unreadable"
    if e.error and not e.suffix:
        return "unverified"
    if e.owner == "foreign":
        return "foreign (another run's)" if e.manifest is not None else (
            "unverified" if e.error else "foreign")
    if e.owner == "legacy":
        return "legacy commit"
    if e.partial:
        return "partial"
    return "uncommitted"


def _print_status(s: dict) -> None:
    d = s["daemon"]
    print(f"output   {s['output_dir']}")
    print(f"remote   {s['remote'] or '(none configured)'}  run={s['run']}")
    print("daemon   " + (f"running (pid {d['pid']}, since {d['started']}, {d['commits'] or 0} commits, "
                         f"{_human_bytes(d['uploaded_bytes'] or 0)} sent)" if d["running"] else "not running"))
    if s["disk"]:
        print(f"disk     {_human_bytes(s['disk']['free_bytes'])} free of {_human_bytes(s['disk']['total_bytes'])}")
    if s["quota"]:
        q = s["quota"]
        print(f"quota    {_human_bytes(q['used_bytes'])} used (trash {_human_bytes(q['trash_bytes'])}), "
              f"{_human_bytes(q['free_bytes'])} free")
    if s.get("identity") and s["identity"] != "this run":
        print(f"run      {s['identity']}")
    if (s.get("space") or {}).get("warning"):
        print(f"space    {s['space']['warning']}")
    if s["remote_error"]:
        print(f"remote error  {s['remote_error']}")
    if s["last_error"]:
        print(f"last error    {s['last_error']} ({s['last_error_at']})")
    print()
    if s["lag"] and s["lag"]["steps"]:
        print(f"lag      newest committed is {s['lag']['steps']} steps behind the newest local checkpoint")
    header = ("CHECKPOINT", "LOCAL", "REMOTE", "SIZE", "AGE", "LAST ERROR")
    rows = [(r["name"] + (" (best)" if r.get("best") else ""), r["local"] or "-", r["remote"] or "-",
             _human_bytes(r["local_bytes"] if r["local_bytes"] is not None else r["remote_bytes"]),
             _human_age(r["age_seconds"]), r.get("error") or "") for r in s["checkpoints"]]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no checkpoints yet)")


def cmd_status(args: argparse.Namespace) -> int:
    s = _gather(_load(args))
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print_status(s)
    if s["remote_error"]:
        print(f"syncd: error: the remote could not be read: {s['remote_error']}", file=sys.stderr)
        return RemoteError.exit_code
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if not args.remote:
        daemon = read_json(cfg.state_dir / "status.json", default={}) if running_pid(cfg.state_dir) else None
        for c in api.judged_local(cfg, completeness.from_status(daemon)):
            print(f"{c.name}\t{_local_text(c, daemon)}\t{_human_bytes(c.size_bytes)}")
        return 0
    remote = open_remote(cfg)
    try:
        snap = api.index_for(cfg, remote).scan()
    finally:
        remote.close()
    copies = snap.restorable()
    for e in sorted(snap, key=lambda e: (e.step is None, e.step or 0, e.version)):
        if copies.get(e.base) is e:
            print(f"{e.name}\tcommitted\t{_human_bytes(e.manifest.size_bytes)}\t{e.manifest.created}")
        else:
            why = f": {e.error}" if e.error else ""
            print(f"{e.name}\t{_remote_state_text(e) if e.owner != 'ours' or not e.committed else 'superseded'}{why}")
    if snap.io_errors:
        raise RemoteError("some remote reads failed: " + "; ".join(snap.io_errors[:3]))
    return 0


# -- wait / restore / verify -------------------------------------------------
def _uncommitted(cfg: SyncConfig) -> list[str]:
    remote = open_remote(cfg)
    try:
        return api.pending(cfg, api.index_for(cfg, remote).scan())
    finally:
        remote.close()


def _daemon_shows_up(cfg: SyncConfig, seconds: float) -> bool:
    """Whether a daemon runs for this folder now or within ``seconds`` (one that is starting)."""
    deadline = time.monotonic() + seconds
    while running_pid(cfg.state_dir) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def cmd_wait(args: argparse.Namespace) -> int:
    """0 committed; 1 (WAIT_TIMED_OUT) the daemon runs but did not commit in time;
    7 (NoDaemon) nothing runs, nor starts within START_GRACE_SECONDS, to commit what is left."""
    cfg = _load(args)
    if not cfg.remote_url:
        raise ConfigError("no remote configured: set gdrive_backup_dir in the config")
    deadline = time.monotonic() + args.timeout
    while True:
        if running_pid(cfg.state_dir) is None:
            left = _uncommitted(cfg)
            if not left:
                print("everything is committed")
                return 0
            if not _daemon_shows_up(cfg, min(START_GRACE_SECONDS, max(0.0, deadline - time.monotonic()))):
                raise NoDaemon(f"syncd is not running for {cfg.output_dir}; {', '.join(left)} "
                               "will not be committed until it runs (syncd start CONFIG)")
        left_s = deadline - time.monotonic()
        if api.wait_committed(cfg, max(0.0, min(WAIT_SLICE_SECONDS, left_s))):
            print("newest checkpoint committed")
            return 0
        if left_s <= WAIT_SLICE_SECONDS:
            print(f"syncd wait: timed out after {args.timeout:g}s", file=sys.stderr)
            return WAIT_TIMED_OUT


def _remote_source(text: str) -> bool:
    """Whether restore's first argument is a remote (a URL or a folder), not a config file."""
    return "://" in text or Path(text).expanduser().is_dir()


def _restore_config(args: argparse.Namespace) -> SyncConfig:
    """The config file's settings, or for ``syncd restore REMOTE --to DIR`` ones made up.

    Without ``--run`` the URL names the run's own folder: its last part is the run
    name and the rest the remote (``gdrive://backups/tess_tiny`` is run ``tess_tiny``
    in ``gdrive://backups``); with ``--run`` the URL is the remote itself.
    """
    if not _remote_source(args.config):
        cfg = _load(args)
        if args.run:
            import dataclasses

            from .parts import part_run

            # With several nodes run_name is this node's part folder (parts.py).
            cfg = dataclasses.replace(cfg, run_name=part_run(args.run, cfg.node_rank),
                                      base_run=args.run if cfg.node_rank else None)
        return cfg
    url = args.config.rstrip("/") if "://" not in args.config else args.config
    if args.to is None:
        raise ConfigError(f"restoring from {url} without a config needs --to DIR (where checkpoint-N goes)")
    if args.run:
        root, run = url, args.run
    elif "://" in url:
        scheme, rest = url.split("://", 1)
        head, _, run = rest.rstrip("/").rpartition("/")
        if not run or not (head.strip("/") or scheme == "gdrive"):  # gdrive:// alone is My Drive
            raise ConfigError(f"cannot tell the run name from {url}: add --run NAME")
        root = f"{scheme}://{head}"
    else:
        folder = Path(url).expanduser().resolve()
        root, run = str(folder.parent), folder.name
    overrides = parse_overrides(args.overrides)
    for key in overrides:
        if key not in KEYS:
            raise ConfigError(f"unknown option --{key}: not a syncd key")
    return build_config({"output_dir": args.to, "run_name": run, "gdrive_backup_dir": root}, overrides,
                        source=url)


def cmd_restore(args: argparse.Namespace) -> int:
    cfg = _restore_config(args)
    if args.to is not None:
        check_folder_path(args.to, "--to")  # before any byte is fetched
    if args.best and args.step is not None:
        raise ConfigError("--best and --step name different checkpoints: give one")
    path = api.restore(cfg, step=args.step, to=Path(args.to) if args.to else None, best=args.best,
                       progress=not args.quiet and sys.stderr.isatty() or args.progress)
    print(f"restored {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cfg = _load(args)
    remote = open_remote(cfg)
    bad = 0
    checked = 0
    try:
        snap = api.index_for(cfg, remote).scan()
        copies = snap.restorable()
        for e in sorted(snap, key=lambda e: (e.step is None, e.step or 0, e.version)):
            if e.owner == "unreadable":
                continue  # counted below as a failed read, not as damage
            if e.error and not e.suffix:
                print(f"{e.name}: BAD manifest: {e.error}")
                bad += 1
                continue
            if copies.get(e.base) is not e:
                continue
            problems = verify.folder_problems(remote, join(cfg.run_name, e.name), e.manifest, read_back=True)
            checked += 1
            if problems:
                bad += 1
                print(f"{e.name}: BAD: " + "; ".join(problems))
            else:
                print(f"{e.name}: ok ({len(e.manifest.files)} files, {_human_bytes(e.manifest.size_bytes)})")
    finally:
        remote.close()
    if snap.io_errors:
        raise RemoteError("could not verify everything, some remote reads failed: " + "; ".join(snap.io_errors[:3]))
    if bad:
        raise IntegrityError(f"{bad} remote checkpoint(s) failed verification")
    if not checked:
        print("no committed checkpoints to verify")
    return 0


def cmd_auth(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from .remotes import gdrive_auth

    gdrive_auth.run_auth(cfg, Path(args.client_secrets))  # says where it saved them
    return 0


# -- parser -----------------------------------------------------------------
def _seconds(text: str) -> float:
    """A finite, non-negative number of seconds (``nan`` would never time out)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, non-negative number of seconds")
    return value


EXIT_STATUS_HELP = """exit status: 0 done; 1 wait timed out; 2 bad config, flag or credentials;
3 remote failed; 4 remote contents fail their manifest; 5 nothing to restore;
6 another daemon owns the folder; 7 wait: no daemon runs (nor starts within 5 s)
while something is uncommitted; 141 output closed early (| head)"""

WAIT_HELP = """exit status: 0 the newest complete checkpoint (and the final model) is committed,
or nothing is left to commit; 1 the daemon runs but had not committed it when --timeout
ran out; 7 no daemon runs for this output folder (one that is starting gets 5 s to show
up) and something is still uncommitted."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncd", description="Mirror training checkpoints to a remote, safely.",
                                epilog=EXIT_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"syncd {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("config", help="the training JSON config")
        sp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        sp.set_defaults(func=func)
        return sp

    sp = add("run", cmd_run, "run the daemon in the foreground (logs to stderr)")
    sp.add_argument("--poll", action="store_true", help="poll the folder instead of using inotify")
    sp.add_argument("--log-file", default=None, help=argparse.SUPPRESS)  # `syncd start`'s rotating log
    sp = add("start", cmd_start, "start the daemon detached; pidfile and log in output_dir/.syncd/")
    sp.add_argument("--poll", action="store_true", help="poll the folder instead of using inotify")
    sp = add("stop", cmd_stop, "stop the daemon gracefully")
    sp.add_argument("--timeout", type=_seconds, default=STOP_TIMEOUT_SECONDS, help="seconds to wait")
    sp = add("status", cmd_status, "local checkpoints, remote commits, queue, last error, disk")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("wait", cmd_wait, "block until the newest complete checkpoint is committed")
    sp.epilog = WAIT_HELP
    sp.add_argument("--timeout", type=_seconds, default=600.0, help="seconds; exit 1 when reached")
    sp = add("list", cmd_list, "what exists locally, or with --remote what is committed")
    sp.add_argument("--remote", action="store_true", help="list the remote instead")
    sp = add("restore", cmd_restore, "fetch the newest (or --step N) committed checkpoint, verified")
    sp.epilog = ("CONFIG may instead be the remote run's folder (a URL or a path), with --to: "
                 "syncd restore gdrive://backups/tess_tiny --to DIR (run name from its last part; "
                 "or syncd restore gdrive://backups --run tess_tiny --to DIR).")
    sp.add_argument("--run", default=None, help="the run's name on the remote (default: the config's run_name)")
    sp.add_argument("--step", type=int, default=None, help="restore this step instead of the newest")
    sp.add_argument("--best", action="store_true",
                    help="restore the best checkpoint (best_model_checkpoint of the newest trainer_state.json)")
    sp.add_argument("--to", default=None, help="target folder (default: output_dir)")
    sp.add_argument("--progress", action="store_true", help="show a progress bar even without a terminal")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    add("verify", cmd_verify, "re-check every committed remote checkpoint against its manifest")
    sp = add("auth", cmd_auth, "Google Drive: run the OAuth consent flow once and save credentials")
    sp.add_argument("--client-secrets", required=True, help="OAuth client JSON from Google Cloud console")
    return p


def quiet_on_closed_pipe(func, argv) -> int:
    """Run a command line's ``func(argv)``; output piped into ``head`` ends quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError, also
    from the flush at exit; stdout is pointed at /dev/null so that flush is silent.
    Exit status 141 is what a shell reports for a program that SIGPIPE stopped.
    Shared by ``syncd``, ``tess-train`` and ``tess-eval``.
    """
    try:
        code = func(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


def main(argv: list[str] | None = None) -> int:
    return quiet_on_closed_pipe(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = extra
    quiet_cmds = {"status", "list", "wait"}
    try:
        _setup_logging(logging.DEBUG if args.verbose else
                       (logging.WARNING if args.command in quiet_cmds else logging.INFO),
                       getattr(args, "log_file", None))
        return args.func(args)
    except SyncdError as e:
        print(f"syncd: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130
