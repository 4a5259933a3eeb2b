"""``python -m trainer CONFIG.json [--key value ...]`` (console script: ``tess-train``).

    tess-train CONFIG.json [--key value ...]   train (resumes where the config says)
    tess-train plot OUTPUT_DIR [--out PNG]     loss.png: losses, eval metrics, resumes, commits
    tess-train --version

Reads top to bottom: parse the config, build tokenizer, data, model and trainer,
decide where to resume from, train, save the final model, and (when syncd runs for
this output folder) wait, bounded, for the final model to reach the remote.
Bad input is one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from syncd.cli import quiet_on_closed_pipe
from syncd.errors import SyncdError

logger = logging.getLogger("tessync.trainer")


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s tess-train %(levelname)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tessync")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return quiet_on_closed_pipe(_main, argv)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] == "--version":
        print(f"tess-train {version()}")
        return 0
    if argv and argv[0] == "plot":
        return plot_main(argv[1:])
    _setup_logging()
    try:
        from .args import parse_config

        cfg = parse_config(argv)  # parse
        run = build(cfg)  # build
        train(run)  # train (resuming where the config says)
        if run.preemption is not None and run.preemption.stopped_at is not None:
            return preempted(run)  # SIGTERM: the step's checkpoint is saved; no final model
        save_final(run)  # save, then wait for syncd's commit of the final model
    except SyncdError as e:
        print(f"tess-train: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tess-train: interrupted", file=sys.stderr)
        return 130
    return 0


def plot_main(argv: list[str]) -> int:
    """``tess-train plot OUTPUT_DIR [--out PNG]``: write the run's loss.png."""
    import argparse

    p = argparse.ArgumentParser(prog="tess-train plot", description=(
        "Draw OUTPUT_DIR/loss.png: training and eval loss, eval metrics, where the run "
        "resumed and where syncd committed checkpoints."))
    p.add_argument("output_dir", help="the run's output_dir (holds loss_log.jsonl)")
    p.add_argument("--out", default=None, help="where to write the PNG (default: OUTPUT_DIR/loss.png)")
    args = p.parse_args(argv)
    output_dir = Path(args.output_dir)
    if not (output_dir / "loss_log.jsonl").is_file():
        print(f"tess-train plot: error: {output_dir} has no loss_log.jsonl (is it a run's output_dir?)",
              file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("tess-train plot: error: matplotlib is not installed (pip install 'tessync[plot]')",
              file=sys.stderr)
        return 2
    from .plot import write_plot

    try:
        path, _fig, data = write_plot(output_dir, args.out)
    except OSError as e:
        print(f"tess-train plot: error: cannot write the plot: {e}", file=sys.stderr)
        return 2
    marks = f"{len(data.resumed_at)} resume(s), {len(data.committed_at)} committed checkpoint(s)"
    print(f"wrote {path} ({len(data.train_steps)} steps, {len(data.eval_loss[0])} evaluations, {marks})")
    return 0


def build(cfg):
    from .build import build_trainer

    return build_trainer(cfg)


def train(run) -> None:
    from .resume import plan_resume
    from .tess_trainer import truncate_loss_log

    cfg, trainer = run.cfg, run.trainer
    with cfg.training.main_process_first(desc="resolve resume", local=False):
        plan = plan_resume(cfg.run.resume_from_checkpoint, cfg.sync)
    if plan.path is not None:
        from .checkpoint_check import check_checkpoint

        # Every rank reads these files in train(); check them all before anything is
        # touched (the loss log is cut back below), so a bad one costs nothing.
        check_checkpoint(plan.path, trainer)
    if trainer.is_world_process_zero():
        logger.info(plan.why)
        if plan.fresh:
            truncate_loss_log(run.loss_log, 0)
        else:
            truncate_loss_log(run.loss_log, _step_of(plan.path))
            _record_resume(run.loss_log.parent, _step_of(plan.path), plan)
    run.resume = plan
    trainer.train(resume_from_checkpoint=str(plan.path) if plan.path else None)


def _record_resume(output_dir: Path, step: int, plan) -> None:
    """One line in resume_log.jsonl per resume, for ``tess-train plot``'s marks.

    Like the loss log it stays one history: lines past the resumed step are dropped.
    """
    import json
    from datetime import datetime, timezone

    from .plot import RESUME_LOG

    path = output_dir / RESUME_LOG
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] < step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
    kept.append(json.dumps({"step": step, "checkpoint": Path(plan.path).name, "why": plan.why,
                            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


def preempted(run) -> int:
    """After a SIGTERM stopped training: one line, the process group left, a distinct exit code.

    No wait for the upload: a notice of 30 s cannot hold one, and syncd goes on sending
    the checkpoint for as long as it runs.
    """
    from syncd.hf import PREEMPTED_EXIT_CODE

    trainer = run.trainer
    if trainer.is_world_process_zero():
        print(run.preemption.summary(trainer.args), file=sys.stderr, flush=True)
    _leave_process_group()
    return PREEMPTED_EXIT_CODE


def _step_of(path: Path) -> int:
    import json

    try:
        return int(json.loads((Path(path) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def save_final(run) -> None:
    from syncd.checkpoints import write_final_marker

    trainer, output_dir = run.trainer, Path(run.cfg.training.output_dir)
    before = _top_level_files(output_dir)
    trainer.save_model(str(output_dir))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        written = sorted(name for name, sig in _top_level_files(output_dir).items() if before.get(name) != sig)
        write_final_marker(output_dir, files=written, step=trainer.state.global_step)
        logger.info("final model saved to %s (step %d): %s", output_dir, trainer.state.global_step,
                    ", ".join(written))
    _leave_process_group()
    if trainer.is_world_process_zero():
        wait_for_sync(run.cfg.sync)


def _leave_process_group() -> None:
    """All ranks meet once more, then tear the process group down explicitly.

    A rank that simply exits leaves gloo's background threads to static
    destructors, which abort the process ("terminate called without an active
    exception") often enough under load to fail a finished run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _top_level_files(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    try:
        for e in os.scandir(folder):
            if e.is_file(follow_symlinks=False) and not e.name.startswith("."):
                st = e.stat()
                out[e.name] = (st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        pass
    return out


def wait_for_sync(sync) -> None:
    """If syncd runs for this output folder, wait (bounded) until the final model is committed."""
    if not sync.remote_url or not sync.wait_at_end:
        return
    try:
        from syncd import api
    except ImportError:
        logger.info("syncd's library API is not available; not waiting for the upload")
        return
    if not api.daemon_running(sync.output_dir):
        logger.info("syncd is not running for %s; the final model is only local until it runs "
                    "(syncd start <config>)", sync.output_dir)
        return
    logger.info("waiting up to %.0f s for syncd to commit the final model to %s",
                sync.wait_timeout_seconds, sync.remote_url)
    start = time.monotonic()
    ok = api.wait_committed(sync, timeout_seconds=sync.wait_timeout_seconds, include_final=True)
    if ok:
        logger.info("final model committed to the remote after %.0f s", time.monotonic() - start)
    else:
        logger.warning("final model not yet committed after %.0f s; syncd keeps uploading in the background",
                       sync.wait_timeout_seconds)


if __name__ == "__main__":
    sys.exit(main())
