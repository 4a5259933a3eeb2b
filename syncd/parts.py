"""One checkpoint made on several nodes without a shared disk: a part per node, committed as one.

Under ``torchrun --nnodes N`` each node has its own ``output_dir``. Hugging Face writes
a checkpoint's model, optimizer, scheduler and ``trainer_state.json`` on global rank
0's node only (every node with ``save_on_each_node``), but every rank writes its own
``rng_state_{rank}.pth`` into ``checkpoint-N/`` on its own node. So each node's
``checkpoint-N`` is a *part* of the checkpoint, and every part must reach the remote
and come back::

    <remote>/<run>/                 node 0's part (the layout of a one-machine run)
      syncd-run.json                its run record: run id, writer (identity.py)
      checkpoint-40/                model, optimizer, trainer_state.json, rng_state_0.pth, ...
    <remote>/<run>.node-1/          node 1's part
      syncd-run.json
      checkpoint-40/                rng_state_1.pth (and whatever else node 1 wrote)
    <remote>/<run>.node-K/          ... one folder per node rank K > 0

How it works (``syncd_nodes`` N, ``syncd_node_rank`` K in the config, or
``$SYNCD_NODES``/``$SYNCD_NODE_RANK``, or torchrun's ``$GROUP_RANK`` for the rank):

- **One daemon per node**, on that node's output folder, mirrors only its own part.
  It is an ordinary daemon whose run folder is its part's (``run_name`` becomes
  ``<run>.node-K``), so uploads, claims, manifests and commits are unchanged. Part
  folders are siblings, not sub-folders of ``<run>``: what a daemon does to its own run
  folder as a whole (at start, aborting S3 multipart uploads its killed predecessor
  left under ``<run>/``) never reaches another node's part.
- **The one-writer rule holds per node rank.** Each part folder has its own run record
  and writer id: node K's daemon writes only ``<run>.node-K``, a fresh node K (after a
  restore) displaces the old node K and nobody else, and nodes never fight over one
  record. Every part carries one run id, node 0's: node K > 0 takes it from
  ``<run>/syncd-run.json`` before its first upload (and waits for it), so parts of two
  runs that happen to share a run_name and a step are never one checkpoint.
- **A set is committed when every part is.** Step S counts as committed (for restore,
  remote retention and ``wait``) only when each of the N part folders holds a
  committed copy of ``checkpoint-S``, all with the same run id: ``complete_sets``.
- **Restore takes whole sets** (``restore_set``): the newest step whose N parts are all
  committed; every part's files are downloaded and verified into
  ``checkpoint-S.partial`` and renamed into place together, with one marker over the
  union (the parts' own markers are left behind). Every node thus gets the model from
  node 0 and every rank's rng file, or nothing. Where two parts hold one path
  (``save_on_each_node``), the lower node's copy is taken. An incomplete set is never
  restored, even when node 0's part alone is newer. The restore folder is claimed with
  this node's part's run id, so its daemon goes on as that part's writer.
- **Deletions stay provable.** A node prunes its part of step S only when
  ``backup_keep_last`` complete sets newer than S exist and S is not the best (node
  0's newest committed ``trainer_state.json`` names it; ``policy.prune_beyond_sets``).
  Every node applies the same rule to the same evidence, and complete sets only ever
  go by that rule, so a part goes only when its whole checkpoint goes, and the newest
  complete set (nothing is newer) is never deleted. A pass that cannot read every
  part deletes nothing.
- **A restored set is not sent again.** A node's restored folder holds more than its
  part; it matches its part's copy when it holds each of the part's files with the
  same bytes (markers aside: freshness.py's ``superset``).
- **Markers per node**: each node's first process writes ``checkpoint-complete.json``
  into its own node's folder after every rank has saved (syncd.hf), so a part without
  ``trainer_state.json`` is complete at once.

``syncd_nodes`` 1 (the default) is one machine, or nodes that share one disk (one
daemon then mirrors the one folder every rank writes to): nothing here applies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .checkpoints import MARKER
from .errors import ConfigError, IntegrityError, NothingToRestore, RemoteError
from .manifest import ManifestFile
from .reconcile import remote_best
from .remote_state import Entry, RemoteIndex, Snapshot
from .remotes.base import Remote, join

log = logging.getLogger("syncd")

PART_SUFFIX = ".node-"
NODES_ENV, NODE_RANK_ENV, TORCHRUN_NODE_RANK_ENV = "SYNCD_NODES", "SYNCD_NODE_RANK", "GROUP_RANK"


def node_layout(nodes: int | None, node_rank: int | None,
                environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(nodes, node rank) from the config's keys, else the environment; ConfigError when unusable.

    The rank matters only with several nodes: one machine (or a shared disk) is node 0
    whatever torchrun's ``GROUP_RANK`` says.
    """
    env = os.environ if environ is None else environ
    if nodes is None:
        nodes = _env_int(env, NODES_ENV, minimum=1) or 1
    if nodes == 1:
        if node_rank not in (None, 0):
            raise ConfigError(f"config key syncd_node_rank is {node_rank} but syncd_nodes is 1")
        return 1, 0
    if node_rank is None:
        for name in (NODE_RANK_ENV, TORCHRUN_NODE_RANK_ENV):
            node_rank = _env_int(env, name, minimum=0)
            if node_rank is not None:
                break
    if node_rank is None:
        raise ConfigError(f"syncd_nodes is {nodes}: set syncd_node_rank (or ${NODE_RANK_ENV}) to this node's rank")
    if node_rank >= nodes:
        raise ConfigError(f"syncd_node_rank {node_rank} is not below syncd_nodes {nodes}")
    return nodes, node_rank


def _env_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"${name} must be an integer, not {text!r}") from None
    if value < minimum:
        raise ConfigError(f"${name} must be at least {minimum}, not {value}")
    return value


def part_run(run: str, node_rank: int) -> str:
    """The run folder holding node ``node_rank``'s part: the run's own for node 0."""
    return run if node_rank == 0 else f"{run}{PART_SUFFIX}{node_rank}"


def complete_sets(parts: Sequence[Iterable[int]]) -> set[int]:
    """Steps committed in every part: the checkpoints that count as committed."""
    if not parts:
        return set()
    out = set(parts[0])
    for p in parts[1:]:
        out &= set(p)
    return out


def committed_steps(snap: Snapshot) -> dict[int, Entry]:
    """A part's committed copies by step (the final model is node 0's alone, never a set)."""
    return {e.step: e for e in snap.restorable().values() if not e.is_final and e.step is not None}


class Parts:
    """Reads the part folders of one run (each attributed by its own run record)."""

    def __init__(self, remote: Remote, run: str, nodes: int, key: str | None = None) -> None:
        self.remote, self.run, self.nodes = remote, run, nodes
        self.indexes = [RemoteIndex(remote, part_run(run, k), key) for k in range(nodes)]
        self._best: tuple[str, int | None] | None = None  # (node 0's newest copy, the best it names)

    def scan(self, ranks: Iterable[int], run_id: str | None = None) -> dict[int, Snapshot]:
        """Each listed part's snapshot; RemoteError when any read failed (nothing can be told then).

        With ``run_id``, only that run's commits are a part's copies; else its own record's.
        """
        out = {}
        for k in ranks:
            self.indexes[k].run_id = run_id
            snap = self.indexes[k].scan()
            if snap.io_errors:
                raise RemoteError(f"{part_run(self.run, k)}: " + "; ".join(snap.io_errors[:3]))
            out[k] = snap
        return out

    def others(self, own_rank: int, run_id: str | None = None) -> dict[int, Snapshot]:
        return self.scan((k for k in range(self.nodes) if k != own_rank), run_id)

    def best(self, snap0: Snapshot) -> int | None:
        """The best step named by node 0's newest committed trainer_state.json (RemoteError if unreadable)."""
        copies = committed_steps(snap0)
        if not copies:
            return None
        newest = copies[max(copies)]
        if self._best is None or self._best[0] != newest.name:
            self._best = (newest.name, remote_best(self.remote, self.run, newest))
        return self._best[1]


def committed_names_elsewhere(remote: Remote, run: str, nodes: int, own_rank: int, key: str | None,
                              run_id: str | None = None) -> set[str]:
    """Checkpoint names every *other* part has committed as run ``run_id`` (``wait``); RemoteError if unreadable."""
    snaps = Parts(remote, run, nodes, key).others(own_rank, run_id)
    steps = complete_sets([committed_steps(s).keys() for s in snaps.values()]) if snaps else set()
    return {f"checkpoint-{s}" for s in steps}


def restore_set(remote: Remote, run: str, nodes: int, node_rank: int, dest_root: Path, *,
                step: int | None = None, best: bool = False, progress: bool = False,
                key: str | None = None) -> Path:
    """Newest (or ``step``, or the best) complete set into ``dest_root/checkpoint-S``, every part's files.

    A set that fails verification is reported and the next older complete one tried
    (without ``step``). Raises RemoteError when any part cannot be read,
    NothingToRestore when no set is complete.
    """
    from .restore import _claim_folder, _pin, best_on_remote, fetch_files

    if dest_root.exists() and not dest_root.is_dir():
        raise ConfigError(f"restore target {dest_root} is not a folder")
    if best:
        step = best_on_remote(remote, run, key)  # node 0's part holds trainer_state.json
    parts = Parts(remote, run, nodes, key)
    snaps = parts.scan(range(nodes))
    for k, snap in snaps.items():
        if snap.record_error is not None:
            raise RemoteError(f"could not read the run record of {part_run(run, k)}: {snap.record_error}")
    copies = [committed_steps(snaps[k]) for k in range(nodes)]
    steps = sorted(complete_sets([c.keys() for c in copies]), reverse=True)
    # Parts of one checkpoint carry one run id; step numbers alike from two runs are no set.
    steps = [s for s in steps if len({c[s].manifest.run_id for c in copies}) == 1]
    if step is not None:
        steps = [s for s in steps if s == step]
    failures: list[str] = []
    for s in steps:
        entries = [c[s] for c in copies]
        sources = merged_sources(run, entries)
        own = entries[node_rank]
        try:
            dest_root.mkdir(parents=True, exist_ok=True)
            _claim_folder(dest_root, own.manifest.run_id if own.manifest else None, part_run(run, node_rank),
                          remote.url)
        except OSError as e:
            raise ConfigError(f"cannot restore into {dest_root}: {e.strerror or e}") from None
        try:
            path = fetch_files(remote, sources, dest_root, own.base, s, progress, what=f"{own.base} ({nodes} parts)")
        except IntegrityError as e:
            failures.append(f"{own.base}: {e}")
            if step is not None:
                raise
            log.warning("%s failed verification (%s); falling back to the next older complete set", own.base, e)
            continue
        _pin(dest_root, own, path)
        log.info("restored %s from %d parts into %s", own.base, nodes, path)
        return path
    if failures:
        raise IntegrityError(f"no complete set of run {run} verified: {'; '.join(failures)}")
    raise NothingToRestore(_nothing_text(run, copies, step, remote.url))


def merged_sources(run: str, entries: Sequence[Entry]) -> list[tuple[str, ManifestFile]]:
    """Every part's files as (remote folder, file); a path two parts hold comes from the lower node.

    The parts' markers stay behind: the merged folder gets one marker of its own.
    """
    chosen: dict[str, tuple[str, ManifestFile]] = {}
    for k, e in enumerate(entries):
        assert e.manifest is not None
        folder = join(part_run(run, k), e.name)
        for mf in e.manifest.files:
            if mf.path == MARKER:
                continue
            have = chosen.get(mf.path)
            if have is None:
                chosen[mf.path] = (folder, mf)
            elif have[1].sha256 != mf.sha256:
                log.warning("%s: %s differs between %s and %s; taking the first", e.base, mf.path, have[0], folder)
    return sorted(chosen.values(), key=lambda x: x[1].path)


def _nothing_text(run: str, copies: list[dict[int, Entry]], step: int | None, url: str) -> str:
    wanted = f"checkpoint-{step}" if step is not None else "checkpoint"
    known = set().union(*(c.keys() for c in copies))
    if step is not None:
        known &= {step}
    if not known:
        return f"no committed {wanted} for run {run} on {url} (on any of its {len(copies)} nodes)"
    newest = max(known)
    missing = [k for k, c in enumerate(copies) if newest not in c]
    if not missing:
        return (f"no complete {wanted} for run {run} on {url}: the parts of checkpoint-{newest} carry different "
                "run ids (parts of two runs that share a run_name), so they are no checkpoint")
    return (f"no complete {wanted} for run {run} on {url}: checkpoint-{newest} is not committed for node(s) "
            f"{', '.join(map(str, missing))} of {len(copies)}; a checkpoint missing a node's part is never restored")


__all__ = ["Parts", "complete_sets", "node_layout", "part_run", "restore_set"]
