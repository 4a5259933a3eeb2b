"""Two simulated nodes: torchrun --nnodes 2 on loopback (gloo, CPU), each node with its own
output folder and its own ``syncd run``, one folder remote. Kill both, wipe both output
folders, start again: both resume from the remote's newest checkpoint and the losses go
on exactly as the killed run's did."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from syncd import api, identity
from syncd.config import load_config
from syncd.remotes.local import LocalRemote
from tests.conftest import PY, REPO, free_port, kill_tree, wait_for, write_config
from tests.syncd.test_safety import committed

HELPER = REPO / "tests" / "helpers" / "multinode_train.py"
LOSS = re.compile(r"^LOSS (\d) (\d+) (\S+)$", re.M)


def losses(log: Path) -> dict[tuple[int, int], float]:
    """(rank, step) -> that rank's loss, as the helper printed it."""
    return {(int(r), int(s)): float(v) for r, s, v in LOSS.findall(log.read_text())}


def test_two_nodes_killed_and_wiped_resume_from_the_remote_and_losses_continue(tmp_path, procs):
    remote = tmp_path / "remote"
    remote.mkdir()
    outs = [tmp_path / "node0", tmp_path / "node1"]
    cfgs = [write_config(tmp_path / f"node{i}.json", output_dir=str(outs[i]), run_name="mn",
                         gdrive_backup_dir=str(remote), syncd_nodes=2, syncd_node_rank=i, backup_keep_last=2,
                         save_total_limit=2, syncd_min_free_gb=0, syncd_interval_seconds=1) for i in (0, 1)]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def launch(phase: str, *extra: str) -> tuple[list, list[Path]]:
        port = free_port()
        logs = [tmp_path / f"train{i}-{phase}.log" for i in (0, 1)]
        started = [procs.start([PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                                "--node_rank", str(i), "--master_addr", "127.0.0.1", "--master_port", str(port),
                                str(HELPER), str(cfgs[i]), *extra], cwd=tmp_path, env=env, log=logs[i])
                   for i in (0, 1)]
        return started, logs

    # Run 1: saves at 4 and 8, hangs after step 10 as a run would be mid-way when killed.
    daemons = [procs.syncd_run(c, cwd=tmp_path) for c in cfgs]
    trainers, logs1 = launch("first", "--hang-at", "10")
    wait_for(lambda: all(f"HANG {i} 10" in logs1[i].read_text() for i in (0, 1)), 120, 0.2, "step 10 on both nodes")
    for i in (0, 1):  # checkpoint-8 counts as committed only once both nodes' parts are
        assert api.wait_committed(load_config(cfgs[i]), timeout_seconds=60, include_final=False), f"node {i}"
    first_writers = [identity.read_remote_owner(LocalRemote(remote), r)[1] for r in ("mn", "mn.node-1")]

    for p in trainers + daemons:
        kill_tree(p.pid)  # torchrun's workers run in sessions of their own
        p.wait(30)
    for out in outs:
        shutil.rmtree(out)

    # Fresh nodes: the daemons wait for the run to be restored; the trainer's
    # auto-resume restores every node's parts on each node, then both continue.
    daemons = [procs.syncd_run(c, cwd=tmp_path) for c in cfgs]
    trainers, logs2 = launch("again")
    for i, p in enumerate(trainers):
        assert p.wait(180) == 0, logs2[i].read_text()[-3000:]
    for i in (0, 1):
        text = logs2[i].read_text()
        assert f"RESUME {i} {outs[i] / 'checkpoint-8'}" in text, text[-3000:]
        assert f"DONE {i} 12" in text
        assert "restored from the remote" in text

    before, after = losses(logs1[0]) | losses(logs1[1]), losses(logs2[0]) | losses(logs2[1])
    assert sorted(after) == [(r, s) for r in (0, 1) for s in range(9, 13)]  # nothing before the checkpoint again
    for key in [(r, s) for r in (0, 1) for s in (9, 10)]:  # each rank's loss depends on its own restored RNG
        assert abs(after[key] - before[key]) <= 1e-6, (key, after[key], before[key])

    # The fresh daemons took over their node's part (new writers) and commit the run's end.
    for i in (0, 1):
        assert api.wait_committed(load_config(cfgs[i]), timeout_seconds=60, include_final=False), f"node {i}"
    writers = [identity.read_remote_owner(LocalRemote(remote), r)[1] for r in ("mn", "mn.node-1")]
    assert None not in writers and all(w != f for w, f in zip(writers, first_writers, strict=True))
    # backup_keep_last 2: both nodes drop checkpoint-4 once 8 and 12 are complete sets.
    for run in ("mn", "mn.node-1"):
        wait_for(lambda run=run: committed(remote / run) == ["checkpoint-12", "checkpoint-8"], 30, 0.2,
                 f"{run} pruned")
