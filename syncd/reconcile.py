"""One pass's view of the world, and the plan the pure policy makes from it.

The daemon's pass reads top to bottom:

    world = gather(...)          local folders judged complete (completeness.py), the
                                 remote snapshot (remote_state.py), staged copies
    plan  = plan_remote(world)   what to upload (newest first, each with its version)
                                 and which remote folders to delete (policy.py)
    ... the executors stage, queue and delete ...
    retire = plan_local(world, plan, staged)
                                 which local folders go (policy.py)

Nothing here writes anything: the functions only read state and ask policy.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import freshness, policy
from .checkpoints import FINAL_NAME, TRAINER_STATE, LocalCheckpoint, step_of
from .errors import IntegrityError
from .fsutil import read_json
from .remote_state import OURS, PARTIAL, UNREADABLE, Entry, Snapshot, folder_name
from .remotes.base import read_small

log = logging.getLogger("syncd")


@dataclass
class World:
    """What one pass knows. ``snap`` is None when there is no remote or it could not be read."""

    mono: float
    local: list[LocalCheckpoint]  # judged, oldest step first
    final: LocalCheckpoint | None
    staged: dict[str, Path]  # staged copies by name (complete by construction)
    changed_at: dict[str, float]  # incomplete folders: when they last changed (monotonic)
    snap: Snapshot | None = None
    owned: bool = False  # this daemon may write and delete in the run folder now
    damaged: set[str] = field(default_factory=set)  # committed folders that lost files
    stale: set[str] = field(default_factory=set)  # names whose local bytes differ from their commit
    pins: set[int] = field(default_factory=set)  # restored here, training not past them yet
    best: int | None = None
    blocked: dict[str, tuple] = field(default_factory=dict)  # failed on a local read: name -> files
    busy: tuple[str, int] | None = None  # the upload in flight: (name, version)
    sets: set[int] | None = None  # several nodes (parts.py): steps every node's part has committed
    parts_unknown: bool = False  # several nodes, and another node's part could not be read

    @property
    def by_step(self) -> dict[int, LocalCheckpoint]:
        return {c.step: c for c in self.local}

    def views(self) -> list[policy.View]:
        """Policy views; an incomplete folder's age is its quiet time on the monotonic clock."""
        return [policy.View(c.step, c.complete, self.mono if c.complete else self.changed_at.get(c.name, self.mono))
                for c in self.local]

    def copies(self) -> dict[str, Entry]:
        """Our committed, undamaged copy of each name."""
        assert self.snap is not None
        return {b: e for b, e in self.snap.copies().items() if e.name not in self.damaged}

    def holding(self) -> dict[str, Entry]:
        """Where each name's bytes are held: its copy, or a newer commit whose rename is still to come.

        A lagging listing may still show a commit under its ``.partial`` name: it holds
        the bytes already, so it is never a reason to send them again.
        """
        assert self.snap is not None
        copies = self.copies()
        for e in self.snap:
            if e.partial and e.owner == OURS and e.manifest is not None and (
                    e.base not in copies or copies[e.base].version < e.version):
                copies[e.base] = e
        return copies


@dataclass(frozen=True)
class Upload:
    """One planned upload: a judged local folder, or only its staged copy."""

    name: str
    version: int
    local: LocalCheckpoint | None  # None: upload the staged copy that outlived its folder


@dataclass
class RemotePlan:
    steps: list[int] | None  # the policy's upload plan; None when the remote state is unknown
    uploads: list[Upload]
    deletions: list[policy.Deletion]
    committed: list[int] = field(default_factory=list)  # steps with a good copy of the local bytes


MAX_TRAINER_STATE_BYTES = 64 * 1024 * 1024  # a long log_history is a few MB


def best_of(state: object) -> int | None:
    """The step ``best_model_checkpoint`` names in a parsed trainer_state.json."""
    best = state.get("best_model_checkpoint") if isinstance(state, dict) else None
    return step_of(Path(best).name) if isinstance(best, str) else None


def best_step(local: list[LocalCheckpoint]) -> int | None:
    """The step of ``best_model_checkpoint`` in the newest readable local trainer_state.json."""
    for ckpt in reversed(local):
        state = read_json(ckpt.path / TRAINER_STATE, default=None)
        if isinstance(state, dict):
            return best_of(state)
    return None


def remote_best(remote, run: str, entry: Entry) -> int | None:
    """The best step named by the trainer_state.json inside a committed remote copy.

    On a fresh VM the newest trainer state may exist only on the remote. Raises
    RemoteError when it cannot be read; None when the copy names no best.
    """
    listed = {f.path for f in entry.manifest.files} if entry.manifest is not None else set()
    if TRAINER_STATE not in listed:
        return None
    try:
        data = read_small(remote, f"{run}/{entry.name}/{TRAINER_STATE}", MAX_TRAINER_STATE_BYTES)
    except IntegrityError:
        return None  # not a trainer state any Trainer writes
    if data is None:
        return None
    try:
        return best_of(json.loads(data))
    except (ValueError, UnicodeDecodeError):
        return None


def restored_pins(state_dir: Path, local: list[LocalCheckpoint]) -> set[int]:
    """Steps restored here that training has not moved past yet: never retired under the user."""
    pins = read_json(state_dir / "state" / "restored.json", default={}) or {}
    out = set()
    for c in local:
        at = pins.get(c.name) if isinstance(pins, dict) else None
        if isinstance(at, (int, float)) and not any(
                o.complete and o.name != c.name and o.newest_mtime > at for o in local):
            out.add(c.step)
    return out


def stale_names(state_dir: Path, copies: dict[str, Entry], local: list[LocalCheckpoint],
                final: LocalCheckpoint | None, superset: bool = False) -> set[str]:
    """Names whose complete local copy differs from their committed remote copy (freshness.py).

    ``superset``: several nodes; a folder restored from every part holds more than its own.
    """
    out = set()
    for c in [x for x in local if x.complete] + ([final] if final is not None and final.complete else []):
        entry = copies.get(c.name)
        if entry is None or entry.manifest is None:
            continue
        if not freshness.same_as_committed(state_dir, c.name, c.path, c.files, entry.manifest, entry.name,
                                           superset=superset and not c.is_final):
            out.add(c.name)
    return out


def version_for(snap: Snapshot, base: str) -> int:
    """Where a new upload of ``base`` goes: our unfinished upload, or the next free version."""
    versions = snap.versions(base)
    copy = snap.copies().get(base)
    resumable = [e.version for e in versions if e.owner == OURS and e.manifest is None and e.error is None
                 and e.suffix in ("", PARTIAL) and (copy is None or e.version > copy.version)]
    if resumable:
        return max(resumable)
    return max((e.version for e in versions), default=0) + 1


def plan_remote(world: World, keep: int) -> RemotePlan:
    """Uploads, newest first, and remote deletions; nothing when the run folder is not ours."""
    snap = world.snap
    if snap is None or not world.owned:
        return RemotePlan(None, [], [])
    copies = world.holding()
    unknown = {e.base for e in snap if e.owner == UNREADABLE}
    committed = sorted({e.step for name, e in copies.items() if e.step is not None and name not in world.stale}
                       | {step_of(b) for b in unknown if step_of(b) is not None})
    # A staged checkpoint is complete by construction and survives the trainer's own
    # rotation, so it stays wanted even while a restarted daemon waits out its quiet time.
    staged_steps = {step_of(n) for n in world.staged}
    by_step = world.by_step
    views = [policy.View(v.step, v.complete or v.step in staged_steps) for v in world.views()]
    views += [policy.View(s, True) for s in staged_steps - set(by_step)]
    steps = policy.upload_plan(views, committed, keep, best=world.best)

    wanted: list[tuple[str, LocalCheckpoint | None]] = []
    final = world.final
    if final is not None and final.complete and (FINAL_NAME not in copies or FINAL_NAME in world.stale):
        wanted.append((FINAL_NAME, final))
    for step in steps:
        ckpt = by_step.get(step)
        wanted.append((f"checkpoint-{step}", ckpt if ckpt is not None and ckpt.complete else None))
    uploads = []
    for name, ckpt in wanted:
        if name in unknown:
            continue
        if name in world.blocked and (ckpt is None or world.blocked[name] == ckpt.files):
            continue  # failed on a local read; waits for its files to change
        if ckpt is None and name not in world.staged:
            continue
        uploads.append(Upload(name, version_for(snap, name), ckpt))

    in_use = {folder_name(u.name, u.version, sfx) for u in uploads for sfx in ("", PARTIAL)}
    if world.busy is not None:
        in_use |= {folder_name(world.busy[0], world.busy[1], sfx) for sfx in ("", PARTIAL)}
    deletions = policy.remote_deletions(
        [policy.RemoteView(e.name, e.base, e.step, e.version, e.state, e.owner,
                           e.manifest is not None or e.error is not None, e.name in world.damaged)
         for e in snap],
        keep=keep, in_use=in_use, clean=snap.clean and not world.parts_unknown, identity_ok=True, best=world.best,
        sets=world.sets)
    return RemotePlan(steps if snap.clean else None, uploads, deletions, committed)


def plan_local(world: World, plan: RemotePlan | None, staged_now: set[str], *, has_remote: bool,
               save_total_limit: int | None, stale_seconds: float) -> list[int]:
    """Local steps to retire. ``plan`` None: no remote configured."""
    protect = set(world.pins)
    steps = plan.steps if plan is not None else []
    if steps is None and has_remote:
        # What the remote holds is unknown: nothing local goes that may not be mirrored.
        protect |= {c.step for c in world.local if c.complete}
    protect |= {s for s in (steps or []) if f"checkpoint-{s}" not in staged_now}
    return policy.local_retire(world.views(), save_total_limit, best_step=world.best,
                               now=world.mono, stale_seconds=stale_seconds, protect=protect)


def best_for(world: World, remote, run: str, cache: dict[str, int | None]) -> int | None:
    """The best step, from the newest trainer_state.json here or, when a newer copy is only
    on the remote (a fresh VM), from that copy's. ``cache``: committed folder -> its best."""
    local_newest = max((c.step for c in world.local if c.complete), default=None)
    copies = [e for e in world.copies().values() if e.step is not None]
    newest = max(copies, key=lambda e: e.step, default=None)
    if newest is None or local_newest is not None and local_newest >= newest.step:
        return world.best
    if newest.name not in cache:
        from .errors import RemoteError

        try:
            found = remote_best(remote, run, newest)
        except RemoteError as e:
            log.warning("%s: cannot read its trainer_state.json for the best step: %s", newest.name, e)
            return world.best
        cache.clear()
        cache[newest.name] = found
    return cache[newest.name]
