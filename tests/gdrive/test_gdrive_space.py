"""Before the first upload, syncd checks that Drive's free space holds what it must keep.

That is the newest ``backup_keep_last``, the best when it is older, and one copy in
flight. The fake Drive reports a quota with room for four and a half checkpoints: with
``backup_keep_last`` 3 that is enough while the best is among the newest three, and not
once an old best must be kept too. Real pydrive2 against the loopback Drive server.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from syncd.checkpoints import write_checkpoint_marker
from syncd.config import build_config
from syncd.daemon import Daemon
from tests.conftest import syncd, wait_for, write_config

STEPS = (1, 2, 3, 4, 5, 6)


def _checkpoint(out: Path, step: int, best: int) -> int:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(random.Random(step).randbytes(50_000))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step,
                                                      "best_model_checkpoint": str(out / f"checkpoint-{best}")}))
    write_checkpoint_marker(d, step)
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("best, copies, warns", [(1, 5, True), (5, 4, False)], ids=["old-best", "best-in-newest"])
def test_space_warns_when_newest_best_and_one_in_flight_cannot_fit(tmp_path, drive, creds, make_remote,
                                                                    best, copies, warns):
    out = tmp_path / "out"
    size = max(_checkpoint(out, s, best) for s in STEPS)
    drive.quota_limit = drive.used_bytes() + int(4.5 * size)
    keys = dict(output_dir="out", run_name="run", gdrive_backup_dir="gdrive://backups", backup_keep_last=3,
                save_total_limit=10, syncd_settle_seconds=0.2, syncd_interval_seconds=0.5, syncd_min_free_gb=0,
                syncd_gdrive_credentials=str(creds), syncd_gdrive_root_url=drive.url, syncd_gdrive_chunk_mb=0.25)
    cfg_path = write_config(tmp_path / "cfg.json", **keys)
    daemon = Daemon(build_config(keys, base_dir=tmp_path), remote=make_remote("gdrive://backups"))
    daemon.start()
    try:
        wait_for(lambda: daemon.status.space is not None, 30, what="the space check")
        space = daemon.status.space
        assert space["copies"] == copies and space["need_bytes"] >= copies * 50_000
        assert ("warning" in space) == warns and (space["available_bytes"] < space["need_bytes"]) == warns, space
        daemon.board.write(force=True)
        r = syncd("status", str(cfg_path), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        shown = [ln for ln in r.stdout.splitlines() if ln.startswith("space")]
        if warns:
            assert len(shown) == 1 and "keeping 5 copies" in shown[0] and "backup_keep_last=3" in shown[0], r.stdout
        else:
            assert shown == [], r.stdout
    finally:
        daemon.stop()
