"""What is on the local disk, and which of it is complete.

Layout owned by the trainer (syncd only reads it and retires whole folders)::

    output_dir/
      checkpoint-500/                 a Hugging Face checkpoint
        model.safetensors ...
        trainer_state.json
        checkpoint-complete.json      our trainer's marker, written last (rank 0)
        checkpoint-is-incomplete.txt  sentinel some writers leave while saving
      config.json, model.safetensors  the final model (trainer.save_model())
      training-complete.json          our trainer's marker for the final model

This module reads what a folder says about itself: a marker that matches the files
makes it complete; without one, ``trainer_state.json`` and no sentinel make it a
candidate (``AWAITING_QUIET``) that only quiet time can complete, which
completeness.py judges. The highest number alone proves nothing: a save killed
half-way leaves a folder too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .fsutil import atomic_write_json

# Hugging Face names checkpoints checkpoint-{global_step}: no leading zeros. A folder
# named checkpoint-007 is someone else's (it would collide with checkpoint-7).
CHECKPOINT_RE = re.compile(r"^checkpoint-(0|[1-9]\d*)$")
MARKER = "checkpoint-complete.json"
FINAL_MARKER = "training-complete.json"
INCOMPLETE_SENTINEL = "checkpoint-is-incomplete.txt"
TRAINER_STATE = "trainer_state.json"
FINAL_NAME = "final"
# Growing files that sit beside a final model saved without our marker and are not part of it.
# Pictures of the run (``tess-train plot`` writes loss.png there) are not the model either.
_NOT_MODEL_SUFFIXES = (".log", ".out", ".err", ".jsonl", ".pid", ".lock", ".tmp", ".png")
_NOT_MODEL_NAMES = ("nohup.out",)
# Files whose presence makes the root of output_dir a saved model.
_FINAL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# A folder without a marker that looks finished: complete once quiet (completeness.py).
AWAITING_QUIET = "settling"


@dataclass(frozen=True)
class LocalFile:
    path: str  # relative POSIX path inside the checkpoint
    size: int
    mtime: float


@dataclass(frozen=True)
class LocalCheckpoint:
    name: str  # "checkpoint-500", or "final" for the final model
    step: int  # -1 when unknown (a final model without a marker)
    path: Path
    complete: bool
    reason: str  # "marker", "quiet" (completeness.py), or why it is not complete yet
    files: tuple[LocalFile, ...] = field(default=(), repr=False)
    links: tuple[str, ...] = ()  # symlinks inside it: never followed, never mirrored

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def newest_mtime(self) -> float:
        return max((f.mtime for f in self.files), default=0.0)

    @property
    def is_final(self) -> bool:
        return self.name == FINAL_NAME


def step_of(name: str) -> int | None:
    m = CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


def walk_files(folder: Path, *, recursive: bool = True, links: list[str] | None = None) -> list[LocalFile]:
    """Regular files below ``folder`` (never following symlinks), sorted by path.

    The relative paths of symlinks met on the way are appended to ``links`` when given.
    """
    out: list[LocalFile] = []

    def visit(d: Path, prefix: str) -> None:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            return
        for e in entries:
            rel = f"{prefix}{e.name}"
            try:
                if e.is_symlink():
                    if links is not None:
                        links.append(rel)
                    continue  # staging never follows a link out of the checkpoint
                if e.is_dir(follow_symlinks=False):
                    if recursive:
                        visit(Path(e.path), rel + "/")
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    out.append(LocalFile(rel, st.st_size, st.st_mtime))
            except FileNotFoundError:
                continue  # deleted while we looked (the trainer's own rotation)

    visit(Path(folder), "")
    out.sort(key=lambda f: f.path)
    return out


def _read_marker(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def _marker_matches(marker: dict, files: Iterable[LocalFile]) -> bool:
    sizes = {f.path: f.size for f in files}
    try:
        return all(sizes.get(e["path"]) == int(e["size"]) for e in marker["files"])
    except (KeyError, TypeError, ValueError):
        return False


def inspect_checkpoint(path: Path) -> LocalCheckpoint:
    """What one ``checkpoint-N`` folder says about itself: complete by its marker, or why not."""
    name = path.name
    step = step_of(name)
    links: list[str] = []
    files = tuple(walk_files(path, links=links))
    marker = _read_marker(path / MARKER)
    if marker is not None:
        ok = _marker_matches(marker, files)
        return LocalCheckpoint(name, step if step is not None else -1, path, ok,
                               "marker" if ok else "marker does not match the files", files, tuple(links))
    names = {f.path for f in files}
    if INCOMPLETE_SENTINEL in names:
        reason = "still being written (incomplete sentinel)"
    elif TRAINER_STATE not in names:
        reason = "no trainer_state.json yet"
    else:
        reason = AWAITING_QUIET
    return LocalCheckpoint(name, step if step is not None else -1, path, False, reason, files, tuple(links))


def inspect_final(output_dir: Path) -> LocalCheckpoint | None:
    """The final model saved at the root of ``output_dir``, or None when there is none."""
    files = tuple(f for f in walk_files(output_dir, recursive=False) if not f.path.startswith("."))
    names = {f.path for f in files}
    marker = _read_marker(output_dir / FINAL_MARKER)
    if marker is not None:
        listed = {e.get("path") for e in marker["files"] if isinstance(e, dict)}
        chosen = tuple(f for f in files if f.path in listed or f.path == FINAL_MARKER)
        ok = _marker_matches(marker, chosen)
        step = marker.get("step") if isinstance(marker.get("step"), int) else -1
        return LocalCheckpoint(FINAL_NAME, step, output_dir, ok,
                               "marker" if ok else "marker does not match the files", chosen)
    if "config.json" not in names or not names.intersection(_FINAL_WEIGHTS):
        return None
    # Without a marker, the model is what save_model writes: not the logs that scripts
    # (and `syncd run > out/syncd.log`) keep appending to beside it.
    files = tuple(f for f in files if not f.path.endswith(_NOT_MODEL_SUFFIXES) and f.path not in _NOT_MODEL_NAMES)
    return LocalCheckpoint(FINAL_NAME, -1, output_dir, False, AWAITING_QUIET, files)


def scan_local(output_dir: Path) -> list[LocalCheckpoint]:
    """Every ``checkpoint-N`` folder under ``output_dir``, oldest step first."""
    out = []
    try:
        entries = list(os.scandir(output_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for e in entries:
        if step_of(e.name) is not None and e.is_dir(follow_symlinks=False):
            out.append(inspect_checkpoint(Path(e.path)))
    out.sort(key=lambda c: c.step)
    return out


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_checkpoint_marker(ckpt_dir: Path, step: int | None = None) -> Path:
    """Write ``checkpoint-complete.json`` listing every file and its size; call it last."""
    ckpt_dir = Path(ckpt_dir)
    files = [f for f in walk_files(ckpt_dir) if f.path != MARKER]
    step = step if step is not None else step_of(ckpt_dir.name)
    marker = {
        "format": 1,
        "step": step,
        "created": _now_iso(),
        "files": [{"path": f.path, "size": f.size} for f in files],
    }
    target = ckpt_dir / MARKER
    atomic_write_json(target, marker)
    return target


def write_final_marker(output_dir: Path, files: Iterable[str], step: int | None = None) -> Path:
    """Write ``training-complete.json`` for the final model's top-level files."""
    output_dir = Path(output_dir)
    wanted = set(files)
    entries = [f for f in walk_files(output_dir, recursive=False) if f.path in wanted]
    marker = {
        "format": 1,
        "step": step,
        "created": _now_iso(),
        "files": [{"path": f.path, "size": f.size} for f in entries],
    }
    target = output_dir / FINAL_MARKER
    atomic_write_json(target, marker)
    return target
