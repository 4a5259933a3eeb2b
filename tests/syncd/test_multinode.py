"""Several nodes without a shared disk (syncd/parts.py): the part and commit rules as tables,
and two in-process daemons, one per node, on one folder remote."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from syncd import identity
from syncd.checkpoints import MARKER, write_checkpoint_marker
from syncd.config import build_config
from syncd.errors import ConfigError, NothingToRestore
from syncd.hf import _marks
from syncd.locking import running_pid
from syncd.manifest import ManifestFile
from syncd.parts import complete_sets, merged_sources, node_layout, part_run, restore_set
from syncd.policy import RemoteView, prune_beyond_sets, remote_deletions
from syncd.remote_state import COMMITTED, OURS, Entry
from syncd.remotes.local import LocalRemote
from tests.conftest import syncd, wait_for, write_config
from tests.syncd.test_safety import committed, one_pass, running

# -- tables --------------------------------------------------------------------------


@pytest.mark.parametrize("nodes, rank, env, want", [
    (None, None, {}, (1, 0)),
    (None, None, {"GROUP_RANK": "3"}, (1, 0)),  # one machine or a shared disk: torchrun's rank is no part
    (2, 1, {}, (2, 1)),
    (None, None, {"SYNCD_NODES": "2", "SYNCD_NODE_RANK": "1"}, (2, 1)),
    (None, None, {"SYNCD_NODES": "3", "GROUP_RANK": "2"}, (3, 2)),
    (2, None, {"SYNCD_NODE_RANK": "0", "GROUP_RANK": "1"}, (2, 0)),  # ours before torchrun's
    (2, 0, {"SYNCD_NODE_RANK": "1"}, (2, 0)),  # the config's key before either
    (1, 0, {"SYNCD_NODES": "4"}, (1, 0)),
])
def test_node_layout(nodes, rank, env, want):
    assert node_layout(nodes, rank, env) == want


@pytest.mark.parametrize("nodes, rank, env, message", [
    (2, None, {}, "set syncd_node_rank"),
    (2, 2, {}, "not below syncd_nodes 2"),
    (1, 1, {}, "syncd_nodes is 1"),
    (None, None, {"SYNCD_NODES": "two"}, "$SYNCD_NODES must be an integer"),
    (None, None, {"SYNCD_NODES": "0"}, "at least 1"),
    (2, None, {"GROUP_RANK": "-1"}, "$GROUP_RANK must be at least 0"),
])
def test_node_layout_refuses(nodes, rank, env, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        node_layout(nodes, rank, env)


def test_a_nodes_config_mirrors_to_its_part_folder(tmp_path):
    base = {"output_dir": "out", "run_name": "run", "gdrive_backup_dir": "remote"}
    one = build_config(base, base_dir=tmp_path)
    two = build_config({**base, "syncd_nodes": 2, "syncd_node_rank": 1}, base_dir=tmp_path)
    assert (one.run_name, one.run, one.nodes) == ("run", "run", 1)
    assert (two.run_name, two.run, two.nodes, two.node_rank) == ("run.node-1", "run", 2, 1)
    assert part_run("run", 0) == "run"


@pytest.mark.parametrize("parts, want", [
    ([[4, 8, 12]], {4, 8, 12}),
    ([[4, 8, 12], [4, 8]], {4, 8}),
    ([[4, 8, 12], []], set()),
    ([[8, 12], [4, 8, 12], [12]], {12}),
])
def test_complete_sets(parts, want):
    assert complete_sets(parts) == want


@pytest.mark.parametrize("committed, sets, keep, want", [
    ([10, 20, 30, 40], [10, 20, 30, 40], 2, [10, 20]),  # one node: remote_prune's answer
    ([10, 30, 40], [10], 2, []),  # the only complete set, and newer parts still waiting for theirs
    ([10, 30, 40], [10, 30], 2, []),  # two sets: neither has two newer
    ([10, 30, 40], [10, 30, 40], 2, [10]),
    ([10, 20, 50], [10, 20], 1, [10]),  # 50 waits for the other nodes; 20 is the newest set
    ([10, 20, 30], [], 3, []),
])
def test_prune_beyond_sets(committed, sets, keep, want):
    assert prune_beyond_sets(committed, sets, keep) == want


def _view(step: int) -> RemoteView:
    return RemoteView(f"checkpoint-{step}", f"checkpoint-{step}", step, 1, COMMITTED, OURS, True)


@pytest.mark.parametrize("sets, best, want", [
    (None, None, ["checkpoint-10", "checkpoint-20"]),  # one node
    ({10}, None, []),  # node 0 ahead of the others: its only complete copy stays
    ({10, 30, 40}, None, ["checkpoint-10", "checkpoint-20"]),  # 20, never a complete set, has two newer
    ({10, 20, 30, 40}, 20, ["checkpoint-10"]),  # the best stays with every node's part
])
def test_remote_deletions_count_complete_sets(sets, best, want):
    views = [_view(s) for s in (10, 20, 30, 40)]
    got = remote_deletions(views, keep=2, clean=True, identity_ok=True, best=best, sets=sets)
    assert sorted(d.name for d in got) == want


def _entry(step: int, *files: tuple[str, str]) -> Entry:
    from syncd.manifest import Manifest

    mfs = tuple(ManifestFile(p, 1, "0" * 32, h * 64) for p, h in files)
    return Entry(f"checkpoint-{step}", f"checkpoint-{step}", step,
                 manifest=Manifest("run", f"checkpoint-{step}", step, "", mfs, "id"), owner=OURS)


def test_merged_sources_take_every_part_lower_node_first_and_no_marker():
    node0 = _entry(8, ("model.safetensors", "a"), ("rng_state_0.pth", "b"), (MARKER, "c"))
    node1 = _entry(8, ("model.safetensors", "d"), ("rng_state_1.pth", "e"), (MARKER, "f"))
    got = [(folder, mf.path, mf.sha256[0]) for folder, mf in merged_sources("run", [node0, node1])]
    assert got == [("run/checkpoint-8", "model.safetensors", "a"), ("run/checkpoint-8", "rng_state_0.pth", "b"),
                   ("run.node-1/checkpoint-8", "rng_state_1.pth", "e")]


@pytest.mark.parametrize("should_save, local, marks", [
    (True, 0, True),  # world rank 0
    (False, 0, True),  # another node's first process: its disk holds its ranks' rng files
    (False, 1, False),
    (True, 1, True),  # save_on_each_node with an odd layout: the Trainer's own writer
])
def test_marker_writers(should_save, local, marks):
    assert _marks(SimpleNamespace(should_save=should_save, local_process_index=local)) is marks


# -- two daemons, one per node, on one folder remote ------------------------------------

BASE = dict(gdrive_backup_dir="remote", run_name="run", backup_keep_last=2, save_total_limit=None,
            syncd_nodes=2, syncd_settle_seconds=0.2, syncd_interval_seconds=30, syncd_min_free_gb=0)


def node_cfg(tmp_path: Path, rank: int, out: str | None = None):
    return build_config({**BASE, "output_dir": out or f"out{rank}", "syncd_node_rank": rank}, base_dir=tmp_path)


def save(out: Path, rank: int, step: int) -> None:
    """What one node's disk holds of checkpoint-N: node 0 the model and state, every node its rng file."""
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if rank == 0:
        (d / "model.safetensors").write_bytes(random.Random(step).randbytes(2048))
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (d / f"rng_state_{rank}.pth").write_bytes(random.Random(1000 * rank + step).randbytes(64))
    write_checkpoint_marker(d, step)


def settle(daemon, run_dir: Path, want: list[str]) -> None:
    def done() -> bool:
        one_pass(daemon)
        return committed(run_dir) == want
    wait_for(done, 30, 0.1, f"{run_dir.name} to hold exactly {want}")


def test_two_nodes_commit_prune_and_restore_whole_sets_only(tmp_path):
    remote = tmp_path / "remote"
    part0, part1 = remote / "run", remote / "run.node-1"
    cfg0, cfg1 = node_cfg(tmp_path, 0), node_cfg(tmp_path, 1)
    save(cfg0.output_dir, 0, 10)
    save(cfg1.output_dir, 1, 10)
    with running(cfg0, tmp_path) as d0:
        with running(cfg1, tmp_path) as d1:
            settle(d0, part0, ["checkpoint-10"])
            settle(d1, part1, ["checkpoint-10"])
        # Node 0 runs ahead: 30 and 40 committed, node 1 has not sent them. checkpoint-10
        # is the only complete set, so it stays although backup_keep_last is 2.
        for step in (20, 30, 40):
            save(cfg0.output_dir, 0, step)
        settle(d0, part0, ["checkpoint-10", "checkpoint-30", "checkpoint-40"])
        one_pass(d0)
        assert committed(part0) == ["checkpoint-10", "checkpoint-30", "checkpoint-40"]

        # A fresh node 1 restores the newest *complete* set, with every part's files.
        fresh = tmp_path / "fresh1"
        path = restore_set(LocalRemote(remote), "run", 2, 1, fresh)
        assert path == fresh / "checkpoint-10"
        assert sorted(p.name for p in path.iterdir()) == [MARKER, "model.safetensors", "rng_state_0.pth",
                                                          "rng_state_1.pth", "trainer_state.json"]
        assert (path / "rng_state_1.pth").read_bytes() == (cfg1.output_dir / "checkpoint-10" /
                                                             "rng_state_1.pth").read_bytes()
        listed = {f["path"] for f in json.loads((path / MARKER).read_text())["files"]}
        assert listed == {"model.safetensors", "rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"}
        assert identity.read_local_record(fresh / ".syncd") == identity.read_remote_record(LocalRemote(remote),
                                                                                           "run.node-1")
        # Its daemon takes over node 1's part; the restored folder holds more than that
        # part, and nothing is sent again.
        with running(node_cfg(tmp_path, 1, "fresh1"), tmp_path) as d1:
            one_pass(d1)
            one_pass(d1)
            assert d1.status.stale == [] and committed(part1) == ["checkpoint-10"]
            assert d1.claim.writer == identity.read_remote_owner(LocalRemote(remote), "run.node-1")[1]
            # Node 1 catches up: 30 and 40 are complete sets, and both nodes drop their 10.
            for step in (30, 40):
                save(fresh, 1, step)
            settle(d1, part1, ["checkpoint-30", "checkpoint-40"])
            settle(d0, part0, ["checkpoint-30", "checkpoint-40"])
    assert restore_set(LocalRemote(remote), "run", 2, 0, tmp_path / "fresh0") == tmp_path / "fresh0" / "checkpoint-40"


def test_an_incomplete_set_is_never_restored(tmp_path):
    cfg0 = node_cfg(tmp_path, 0)
    save(cfg0.output_dir, 0, 4)
    with running(cfg0, tmp_path) as d0:
        settle(d0, tmp_path / "remote" / "run", ["checkpoint-4"])
    with pytest.raises(NothingToRestore, match="checkpoint-4 is not committed for node.s. 1 of 2"):
        restore_set(LocalRemote(tmp_path / "remote"), "run", 2, 0, tmp_path / "fresh0")
    assert not (tmp_path / "fresh0" / "checkpoint-4").exists()


@pytest.mark.parametrize("local_rank, starts", [(0, True), (1, False)])
def test_the_callback_starts_a_daemon_on_each_nodes_first_process(tmp_path, local_rank, starts):
    from syncd.hf import SyncdCallback

    out = tmp_path / "out1"
    cfg = tmp_path / "node1.json"
    cfg.write_text(json.dumps({**BASE, "output_dir": str(out), "gdrive_backup_dir": str(tmp_path / "remote"),
                               "syncd_node_rank": 1}))
    cb = SyncdCallback(cfg, preemption=False)
    args = SimpleNamespace(output_dir=str(out), should_save=False, local_process_index=local_rank)
    cb.on_train_begin(args, SimpleNamespace(), SimpleNamespace())
    pid = running_pid(out / ".syncd")
    try:
        assert (pid is not None) is starts
        if starts:
            assert json.loads((out / ".syncd" / "status.json").read_text())["run"] == "run.node-1"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: running_pid(out / ".syncd") is None, 60, what="syncd to stop")


def test_every_node_keeps_its_part_of_the_best_that_node_0_names(tmp_path):
    """Node 1's disk has no trainer_state.json: the best comes from node 0's committed part."""
    remote = tmp_path / "remote"
    cfgs = [build_config({**BASE, "backup_keep_last": 1, "output_dir": f"out{r}", "syncd_node_rank": r},
                         base_dir=tmp_path) for r in (0, 1)]
    for r in (0, 1):
        save(cfgs[r].output_dir, r, 10)
    with running(cfgs[0], tmp_path) as d0, running(cfgs[1], tmp_path) as d1:
        settle(d0, remote / "run", ["checkpoint-10"])
        settle(d1, remote / "run.node-1", ["checkpoint-10"])
        for step in (20, 30):
            for r in (0, 1):
                save(cfgs[r].output_dir, r, step)
            (cfgs[0].output_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(
                {"global_step": step, "best_model_checkpoint": str(cfgs[0].output_dir / "checkpoint-10")}))
            write_checkpoint_marker(cfgs[0].output_dir / f"checkpoint-{step}", step)
        settle(d0, remote / "run", ["checkpoint-10", "checkpoint-30"])
        settle(d1, remote / "run.node-1", ["checkpoint-10", "checkpoint-30"])
        one_pass(d1)
        assert d1.status.best_step == 10 and committed(remote / "run.node-1") == ["checkpoint-10", "checkpoint-30"]
    assert restore_set(LocalRemote(remote), "run", 2, 1, tmp_path / "fresh", best=True) == \
        tmp_path / "fresh" / "checkpoint-10"


def test_node_1_takes_node_0s_run_id_and_parts_of_two_runs_are_no_set(tmp_path):
    remote = tmp_path / "remote"
    cfg0, cfg1 = node_cfg(tmp_path, 0), node_cfg(tmp_path, 1)
    save(cfg0.output_dir, 0, 4)
    save(cfg1.output_dir, 1, 4)
    with running(cfg1, tmp_path) as d1:
        one_pass(d1)
        wait_for(lambda: "waiting for node 0 to make the run id" in (d1.status.last_error or ""), 30,
                 what="node 1 to wait for node 0")
        assert committed(remote / "run.node-1") == []
        with running(cfg0, tmp_path) as d0:
            settle(d0, remote / "run", ["checkpoint-4"])
            settle(d1, remote / "run.node-1", ["checkpoint-4"])
    ids = [identity.read_remote_record(LocalRemote(remote), r) for r in ("run", "run.node-1")]
    assert ids[0] is not None and ids[0] == ids[1]

    # Another run under the same names, its node 1 part made as a run of its own: step 4
    # exists in both folders, but that is no checkpoint.
    other = tmp_path / "remote2"
    cfg0b = build_config({**BASE, "output_dir": "b0", "gdrive_backup_dir": str(other), "syncd_node_rank": 0},
                         base_dir=tmp_path)
    alone = build_config({**BASE, "output_dir": "b1", "gdrive_backup_dir": str(other), "run_name": "run.node-1",
                          "syncd_nodes": 1}, base_dir=tmp_path)
    save(cfg0b.output_dir, 0, 4)
    save(alone.output_dir, 1, 4)
    with running(cfg0b, tmp_path) as d0, running(alone, tmp_path) as d1:
        settle(d0, other / "run", ["checkpoint-4"])
        settle(d1, other / "run.node-1", ["checkpoint-4"])
    with pytest.raises(NothingToRestore, match="different run ids"):
        restore_set(LocalRemote(other), "run", 2, 1, tmp_path / "fresh")


def test_syncd_restore_with_run_brings_that_runs_whole_set(tmp_path):
    remote = tmp_path / "remote"
    cfgs = [build_config({**BASE, "run_name": "other", "output_dir": f"out{r}", "syncd_node_rank": r},
                         base_dir=tmp_path) for r in (0, 1)]
    for r in (0, 1):
        save(cfgs[r].output_dir, r, 6)
    with running(cfgs[0], tmp_path) as d0, running(cfgs[1], tmp_path) as d1:
        settle(d0, remote / "other", ["checkpoint-6"])
        settle(d1, remote / "other.node-1", ["checkpoint-6"])
    cfg = write_config(tmp_path / "node1.json", **{**BASE, "output_dir": "fresh", "syncd_node_rank": 1})
    r = syncd("restore", str(cfg), "--run", "other", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fresh" / "checkpoint-6").iterdir()) == [
        MARKER, "model.safetensors", "rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"]
