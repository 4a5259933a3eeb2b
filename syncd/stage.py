"""Staging: freeze a complete checkpoint's files before uploading them.

    output_dir/.syncd/staging/
      checkpoint-500/        hard links to output_dir/checkpoint-500/*
      checkpoint-500.tmp/    being built; never uploaded
      final/                 hard links to the final model's top-level files

Hard links share the data but not the name, so the trainer's own rotation may
delete ``checkpoint-N`` mid-upload and the upload still reads whole files. Where
links are impossible (another filesystem, no permission) the files are copied.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .checkpoints import LocalCheckpoint, LocalFile, walk_files
from .faults import crash_point

log = logging.getLogger(__name__)

_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}


def staged_matches(folder: Path, files: tuple[LocalFile, ...]) -> bool:
    """The staged copy holds these files as they are now (a re-save of the same sizes is not)."""
    staged = {f.path: (f.size, f.mtime) for f in walk_files(folder)}
    return staged == {f.path: (f.size, f.mtime) for f in files}


def stage(ckpt: LocalCheckpoint, staging_root: Path) -> Path | None:
    """Link (or copy) ``ckpt``'s files into ``staging_root/<name>``; None if the source vanished."""
    dest = staging_root / ckpt.name
    if dest.exists():
        if staged_matches(dest, ckpt.files):
            return dest
        log.info("%s: staged copy is out of date; staging again", ckpt.name)
        shutil.rmtree(dest)
    tmp = staging_root / f"{ckpt.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copied = 0
    try:
        for f in ckpt.files:
            src = ckpt.path / f.path
            dst = tmp / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _NO_LINK:
                    raise
                shutil.copy2(src, dst, follow_symlinks=False)
                copied += 1
            if dst.stat().st_size != f.size:
                raise FileNotFoundError(f"{src} changed while staging")
            crash_point("mid_stage")
    except FileNotFoundError as e:
        log.info("%s: source changed or vanished while staging (%s); skipped", ckpt.name, e)
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    os.replace(tmp, dest)
    how = f"{copied} copied, {len(ckpt.files) - copied} hard-linked" if copied else "hard links"
    log.info("%s: staged (%d files, %s)", ckpt.name, len(ckpt.files), how)
    return dest


class Stager:
    """The staging step of a pass: a failure is that checkpoint's error, never the pass's.

    ``fail(message, name)`` records the error; the checkpoint is then blocked (skipped
    by the plan) until its files change.
    """

    def __init__(self, staging_root: Path, fail: Callable[[str, str], None],
                 clear: Callable[[str, str], None]) -> None:
        self.root, self.fail, self.clear = staging_root, fail, clear
        self.blocked: dict[str, tuple] = {}  # name -> its files when it failed
        self._warned_links: set[str] = set()
        self._last: dict[str, str] = {}

    def __call__(self, ckpt: LocalCheckpoint) -> Path | None:
        if ckpt.links and ckpt.name not in self._warned_links:
            self._warned_links.add(ckpt.name)
            log.warning("%s: %d symlink(s) are not mirrored (syncd never follows links): %s", ckpt.name,
                        len(ckpt.links), ", ".join(ckpt.links[:3]))
        odd = [f.path for f in ckpt.files if "\\" in f.path]
        if odd:
            self._failed(ckpt, f"{ckpt.name}: cannot mirror a file name with a backslash ({odd[0]!r}): "
                               "it is not portable; rename it")
            return None
        crash_point("before_stage")
        try:
            path = stage(ckpt, self.root)
        except OSError as e:
            self._failed(ckpt, f"{ckpt.name}: cannot stage: {e}")
            return None
        if path is not None:
            self.clear(ckpt.name, f"{ckpt.name}: cannot stage")
            self._last.pop(ckpt.name, None)
        return path

    def _failed(self, ckpt: LocalCheckpoint, message: str) -> None:
        if self._last.get(ckpt.name) != message:  # said once, not at every pass
            self._last[ckpt.name] = message
            self.fail(message, ckpt.name)
        self.blocked[ckpt.name] = ckpt.files


def unstage(staging_root: Path, name: str) -> None:
    shutil.rmtree(staging_root / name, ignore_errors=True)
    shutil.rmtree(staging_root / f"{name}.tmp", ignore_errors=True)


def staged_names(staging_root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(staging_root) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
