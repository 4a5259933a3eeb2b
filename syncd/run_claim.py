"""Whether this daemon may write to (and delete in) the remote run folder now.

identity.py holds the records and the pure decision; this is the daemon's side of it,
kept across passes: the run id it mirrors as, the writer id of its output folder, and
whether it has recorded itself as the run's one writer. Each pass asks ``settle`` with
the run record its snapshot read; the uploader asks ``ensure_run_id`` before the first
upload of a new run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import identity
from .errors import RemoteError, SyncdError
from .remote_state import RemoteIndex, Snapshot
from .remotes.base import Remote
from .status import Board

log = logging.getLogger("syncd")


class RunClaim:
    def __init__(self, remote: Remote, index: RemoteIndex, *, run: str, remote_url: str | None,
                 state_dir: Path, output_dir: Path, board: Board, first_part: str | None = None) -> None:
        self.remote, self.index, self.run = remote, index, run
        # Node K > 0 of several (parts.py): node 0's run folder, whose run id every part carries.
        self.first_part = first_part
        self.remote_url, self.state_dir, self.out = remote_url, state_dir, output_dir
        self.board = board
        self.run_id: str | None = None
        self.writer: str | None = None  # this output folder's writer id
        self.writing = False  # recorded as the run's writer in the remote record

    @property
    def where(self) -> str:
        return f"{self.remote_url}/{self.run}"

    def refuse_at_start(self, has_local_checkpoints: bool) -> str | None:
        """The one-line reason this daemon may never write here, or None (passes only report)."""
        try:
            record = identity.read_remote_record(self.remote, self.run)
        except SyncdError as e:  # an unreadable record is the passes' to report
            log.warning("cannot read the remote run record yet: %s", e)
            return None
        decision = identity.decide(identity.read_local_record(self.state_dir), record,
                                   has_local_checkpoints=has_local_checkpoints, output_dir=self.out,
                                   remote_run=self.where)
        return decision.message if decision.action == identity.REFUSE else None

    def _adopt(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.index.run_id = run_id
        if run_id is not None:
            self.board.status.run_id = run_id

    def _become_writer(self, run_id: str, current_writer: str | None) -> None:
        self.writer = identity.local_writer(self.state_dir)
        if current_writer != self.writer:
            identity.write_remote_record(self.remote, self.run, run_id, self.writer)
            if current_writer is not None:
                log.warning("run %s: this output folder takes over from writer %s",
                            identity.short(run_id), identity.short(current_writer))
        self.writing = True

    def settle(self, snap: Snapshot, has_local_checkpoints: bool) -> bool:
        """Whether this daemon may write and delete in the run folder after this snapshot."""
        status = self.board.status
        record = snap.record_run_id
        if snap.record_error is not None:  # never written over: it may be another run's
            status.identity = f"unknown: {snap.record_error}"
            return False
        if self.run_id is not None and record == self.run_id:
            if snap.record_writer == self.writer:
                return True
            if self.writing:
                # Restored and resumed elsewhere while this machine lived on: that one writes now.
                message = (f"displaced: another output folder (writer {identity.short(snap.record_writer)}) now "
                           f"writes run {identity.short(self.run_id)}; this daemon no longer uploads or deletes "
                           "(restart it to take the run back)")
                if status.identity != message:
                    log.error("%s", message)
                status.identity = message
                status.errors["run"] = message
                status.last_error = message
                return False
        decision = identity.decide(identity.read_local_record(self.state_dir), record,
                                   has_local_checkpoints=has_local_checkpoints, output_dir=self.out,
                                   remote_run=self.where)
        if decision.action == identity.CLAIM:
            assert decision.run_id is not None
            self.writer = identity.local_writer(self.state_dir)
            identity.write_remote_record(self.remote, self.run, decision.run_id, self.writer)
            self.writing = True
            log.info("run %s: recorded in the remote run folder", identity.short(decision.run_id))
            decision = identity.Decision(identity.OK, decision.run_id)
        if decision.action == identity.OK:
            if not self.writing:  # starting to mirror: this output folder becomes the run's one writer
                self._become_writer(decision.run_id, snap.record_writer)
            if self.run_id != decision.run_id:
                log.info("mirroring as run %s", identity.short(decision.run_id))
            self._adopt(decision.run_id)
            status.identity = "this run"
            status.errors.pop("run", None)
            return True
        self._adopt(None)
        if decision.action == identity.NEW:
            status.identity = "new run: its id is made at the first upload"
            return True
        if status.identity != decision.message:
            (log.info if decision.action == identity.WAIT else log.error)("%s", decision.message)
        status.identity = decision.message
        if decision.action == identity.REFUSE:
            status.errors["run"] = decision.message
            status.last_error = decision.message
        return False

    def ensure_run_id(self) -> str:
        """The run id, made (remote record first, then ours) when this run uploads first."""
        if self.run_id is not None:
            return self.run_id
        current = identity.read_remote_record(self.remote, self.run)
        if current is not None:
            raise RemoteError(f"another run ({identity.short(current)}) took {self.run} on the remote "
                              "meanwhile; set another run_name")
        run_id = identity.new_run_id()
        if self.first_part is not None:
            # One run id for every node's part, so parts of two runs never make a set.
            run_id = identity.read_remote_record(self.remote, self.first_part)
            if run_id is None:
                raise RemoteError(f"waiting for node 0 to make the run id in {self.first_part} "
                                  "(its first upload does); this node's part follows")
        identity.write_local_record(self.state_dir, run_id, self.run, self.remote_url)
        self.writer = identity.local_writer(self.state_dir)
        identity.write_remote_record(self.remote, self.run, run_id, self.writer)
        self.writing = True
        log.info("new run %s for %s", identity.short(run_id), self.run)
        self._adopt(run_id)
        self.board.status.identity = "this run"
        return run_id
