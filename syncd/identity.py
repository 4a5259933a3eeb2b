"""Which run owns a remote run folder, and which run an output folder belongs to.

    <remote>/<run>/syncd-run.json   {"format": 1, "run_id": "<hex>", "writer": "<hex>", "run": .., "created": ..}
    output_dir/.syncd/run.json       {"format": 1, "run_id": "<hex>", "writer": "<hex>", "run": .., "remote": ..}

A run id is made when a run first uploads, written to the remote run folder first
and to the output folder second; every claim and manifest the run writes carries
it. A restore copies it into the folder it restores into, so a fresh VM (or the
trainer's auto-resume) continues as the same run. One writer per remote run: a
daemon whose output folder holds another run's checkpoints is refused, and one that
finds the remote already owned while its output folder has nothing yet waits for a
restore to adopt the run.

One writer at a time: each output folder that holds the run has its own writer id
(made with its record, anew by every restore). A daemon records its writer in the
remote record when it starts mirroring; one that then finds another writer there was
displaced (the run was restored and resumed elsewhere while this machine lived on)
and stops uploading and deleting, saying so, instead of fighting over the folder.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import IntegrityError
from .fsutil import atomic_write_json, read_json
from .remotes.base import Remote, join, read_small

RUN_RECORD = "syncd-run.json"
LOCAL_RECORD = "run.json"
MAX_RECORD_BYTES = 64 * 1024

# What a daemon does about identity (Decision.action)
OK, CLAIM, NEW, WAIT, REFUSE = "ok", "claim", "new", "wait", "refuse"


def new_run_id() -> str:
    return uuid.uuid4().hex


def short(run_id: str | None) -> str:
    return (run_id or "?")[:8]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_local_record(state_dir: Path) -> str | None:
    doc = read_json(Path(state_dir) / LOCAL_RECORD, default=None)
    run_id = doc.get("run_id") if isinstance(doc, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def local_writer(state_dir: Path) -> str | None:
    """This output folder's writer id (made with its record); None without a record."""
    doc = read_json(Path(state_dir) / LOCAL_RECORD, default=None)
    if not isinstance(doc, dict) or not isinstance(doc.get("run_id"), str):
        return None
    writer, here = doc.get("writer"), str(Path(state_dir).resolve())
    # A record copied along with its folder (`cp -r out out2`) is another writer.
    if not isinstance(writer, str) or not writer or doc.get("state_dir") != here:
        writer = new_run_id()
        atomic_write_json(Path(state_dir) / LOCAL_RECORD, {**doc, "writer": writer, "state_dir": here})
    return writer


def write_local_record(state_dir: Path, run_id: str, run: str, remote_url: str | None) -> None:
    atomic_write_json(Path(state_dir) / LOCAL_RECORD,
                      {"format": 1, "run_id": run_id, "writer": new_run_id(), "state_dir": str(Path(state_dir).resolve()),
                       "run": run, "remote": remote_url, "created": _now()})


def read_remote_record(remote: Remote, run: str) -> str | None:
    """The run id recorded in the remote run folder; None when there is no record.

    RemoteError when it could not be read; IntegrityError when it is not a record
    (then nobody may assume the folder is theirs).
    """
    return read_remote_owner(remote, run)[0]


def read_remote_owner(remote: Remote, run: str) -> tuple[str | None, str | None]:
    """(run id, writer id) of the remote run record; (None, None) when there is none."""
    path = join(run, RUN_RECORD)
    data = read_small(remote, path, MAX_RECORD_BYTES)
    if data is None:
        return None, None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{path} is not a syncd run record (not JSON)") from None
    run_id = doc.get("run_id") if isinstance(doc, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise IntegrityError(f"{path} is not a syncd run record (no run_id)")
    writer = doc.get("writer")
    return run_id, writer if isinstance(writer, str) and writer else None


def write_remote_record(remote: Remote, run: str, run_id: str, writer: str | None = None) -> None:
    doc = {"format": 1, "run_id": run_id, "writer": writer, "run": run, "created": _now()}
    remote.write_bytes(join(run, RUN_RECORD), (json.dumps(doc, indent=1) + "\n").encode())


@dataclass(frozen=True)
class Decision:
    action: str  # OK, CLAIM, NEW, WAIT or REFUSE
    run_id: str | None
    message: str = ""


def decide(local_id: str | None, remote_id: str | None, *, has_local_checkpoints: bool,
           output_dir: Path, remote_run: str) -> Decision:
    """What a daemon may do, from the two records; pure, so it is tested as a table."""
    if remote_id is not None and local_id == remote_id:
        return Decision(OK, local_id)
    if remote_id is not None and local_id is not None:
        return Decision(REFUSE, None,
                        f"{output_dir} belongs to run {short(local_id)} but {remote_run} holds run "
                        f"{short(remote_id)}: two runs cannot share one remote run folder; "
                        "set another run_name")
    if remote_id is not None:
        if has_local_checkpoints:
            return Decision(REFUSE, None,
                            f"{remote_run} holds run {short(remote_id)} and {output_dir} holds checkpoints that "
                            "were not restored from it: set another run_name, or restore from the remote into "
                            "an empty output folder to continue that run")
        return Decision(WAIT, None,
                        f"waiting: {remote_run} holds run {short(remote_id)}; nothing is mirrored until the "
                        "trainer's auto-resume (or syncd restore) restores from it into this output folder")
    if local_id is not None:
        return Decision(CLAIM, local_id)
    return Decision(NEW, None)
