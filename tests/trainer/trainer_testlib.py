"""Helpers for the trainer tests: a very small TESS config, and runners.

Every run uses a 1-layer, 32-wide RoBERTa on a few hundred shipped quad lines, one
CPU thread per process (two cores are shared with the rest of the suite), and a
datasets cache inside the session's temporary folder. Subprocesses started here are
always killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tiny_config(tmp: Path, **overrides) -> dict:
    cfg = {
        "_comment": "test config",
        "output_dir": str(tmp / "out"),
        "run_name": "tiny",
        "tokenizer_name": str(REPO / "data" / "tokenizer"),
        "model_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 64},
        "cache_dir": str(tmp.parent / "hf-cache"),
        "train_file": str(REPO / "data" / "kg_quads" / "train.txt"),
        "validation_file": str(REPO / "data" / "kg_quads" / "validation.txt"),
        "max_train_samples": 400,
        "max_eval_samples": 16,
        "conditional_generation": "kg_quad",
        "max_seq_length": 48,
        "pad_to_max_length": False,
        "simplex_value": 5,
        "num_diffusion_steps": 100,
        "num_inference_diffusion_steps": 4,
        "self_condition": "logits_addition",
        "self_condition_zeros_after_softmax": True,
        "eval_num_samples": 4,
        "seed": 7,
        "max_steps": 30,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 10,
        "eval_strategy": "no",
        "save_strategy": "steps",
        "save_steps": 10,
        "save_total_limit": None,
        "disable_tqdm": True,
        "use_cpu": True,
        "resume_from_checkpoint": "auto",
    }
    cfg.update(overrides)
    return cfg


def write_config(tmp: Path, **overrides) -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps(tiny_config(tmp, **overrides), indent=1))
    return path


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def read_losses(output_dir: Path) -> dict[int, float]:
    out = {}
    for line in (output_dir / "loss_log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


class Procs:
    """Starts trainer subprocesses and kills whatever is left at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, launcher: list[str] | None = None) -> subprocess.Popen:
        cmd = (launcher or [sys.executable, "-m"]) + ["trainer", *args]
        f = open(log, "wb")
        p = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        f.close()
        self.procs.append(p)
        return p

    def run(self, args: list[str], log: Path, timeout: float = 240, launcher: list[str] | None = None) -> int:
        p = self.start(args, log, launcher)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p)
            raise AssertionError(f"trainer did not finish in {timeout} s; log:\n{log.read_text()[-3000:]}") from None

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        if p.poll() is None:
            from tests.conftest import kill_tree

            kill_tree(p.pid)  # torchrun's workers too, in sessions of their own
            p.wait(timeout=30)

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}; log:\n{tail}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def fake_checkpoint(output_dir: Path, step: int, *, marker: bool = True, size: int = 64) -> Path:
    """A checkpoint-N folder with a few files; with ``marker``, made complete the trainer's way."""
    from syncd.checkpoints import write_checkpoint_marker

    ckpt = output_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(bytes(range(256))[:size] * 4)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if marker:
        write_checkpoint_marker(ckpt, step)
    return ckpt


def commit_to_remote(ckpt: Path, remote_root: Path, run: str) -> Path:
    """Copy a checkpoint to a folder remote as syncd commits it: files, then the manifest last."""
    import hashlib
    import shutil
    from datetime import datetime, timezone

    dest = remote_root / run / ckpt.name
    shutil.copytree(ckpt, dest)
    files = []
    for f in sorted(p for p in dest.rglob("*") if p.is_file()):
        data = f.read_bytes()
        files.append({"path": f.relative_to(dest).as_posix(), "size": len(data),
                      "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()})
    step = int(ckpt.name.split("-")[1])
    manifest = {"format": 1, "run": run, "name": ckpt.name, "step": step,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (dest / "syncd-manifest.json").write_text(json.dumps(manifest))
    return dest
