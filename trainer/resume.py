"""Where a run resumes from: ``resume_from_checkpoint`` of auto, a path, or false.

``auto`` never trusts the highest-numbered folder (a save killed half-way leaves one):

    1. the newest *complete* local checkpoint (marker matches, or settled without one);
    2. else, when a remote is configured, its newest committed checkpoint, restored
       into ``output_dir/checkpoint-N`` first (syncd verifies it); a remote that could
       not be read stops the run (it is not "nothing there": starting over would
       fork the run);
    3. else, if ``output_dir`` holds checkpoint folders but none is usable: an error,
       rather than silently starting over on top of them;
    4. else a fresh start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.checkpoints import inspect_checkpoint
from syncd.completeness import WRITER_STOPPED, judge
from syncd.config import SyncConfig
from syncd.errors import ResumeError
from syncd.hf import find_resume
from syncd.overlap import check_overlap

logger = logging.getLogger("tessync.trainer")


__all__ = ["ResumeError", "ResumePlan", "plan_resume"]

# The hint an error gives for starting over on purpose.
START_OVER = "pass --resume_from_checkpoint false to start a new run"


@dataclass(frozen=True)
class ResumePlan:
    path: Path | None  # the checkpoint folder to resume from; None starts fresh
    why: str  # one line for the log

    @property
    def fresh(self) -> bool:
        return self.path is None


def plan_resume(setting: Any, sync: SyncConfig, *, restore=None) -> ResumePlan:
    """Decide where to resume from; may restore from the remote (step 2 above).

    ``restore`` replaces ``syncd.api.restore`` (a function of the SyncConfig).
    """
    output_dir = sync.output_dir
    check_overlap(output_dir, sync.remote_url, sync.run_name)
    if setting is None or setting is False or (isinstance(setting, str) and setting.lower() == "false"):
        return ResumePlan(None, "starting fresh (resume_from_checkpoint is false)")
    if isinstance(setting, str) and setting.lower() not in ("auto", "true"):
        path = Path(setting).expanduser()
        if not path.is_dir():
            raise ResumeError(f"resume_from_checkpoint {setting} is not a folder")
        ckpt = judge(inspect_checkpoint(path), WRITER_STOPPED, 0.0)  # nothing writes it before step one
        if not ckpt.complete:
            logger.warning("resume_from_checkpoint %s looks incomplete (%s); using it as asked", path, ckpt.reason)
        return ResumePlan(path, f"resuming from {path} (given in resume_from_checkpoint)")
    # auto: the rules syncd.hf gives any Trainer script (resume_checkpoint), shared
    path, why = find_resume(sync, restore=restore, start_over=START_OVER)
    return ResumePlan(path, why)
