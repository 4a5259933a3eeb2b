"""syncd.hf for any Hugging Face Trainer script: SyncdCallback, preemption saves, resume_checkpoint.

The end-to-end test runs a plain Trainer script (tests/helpers/hf_train.py) whose
SyncdCallback starts a real detached daemon with a 30 s settle; the others run in
this process on real folders.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
from pathlib import Path

import pytest

from syncd.checkpoints import MARKER, inspect_checkpoint
from syncd.errors import RemoteError, ResumeError, SyncdError
from syncd.hf import PREEMPTED_EXIT_CODE, resume_checkpoint
from syncd.locking import running_pid
from syncd.manifest import MANIFEST_NAME
from tests.conftest import PY, REPO, wait_for, write_config
from tests.trainer.trainer_testlib import commit_to_remote, fake_checkpoint

SETTLE_SECONDS = 30.0


def test_syncd_core_imports_neither_torch_nor_transformers():
    code = ("import sys, syncd.cli, syncd.daemon, syncd.api, syncd.hf; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# -- resume_checkpoint: a table over real folders and a real folder remote ---------------

def _local(tmp: Path, remote: Path | None) -> None:
    fake_checkpoint(tmp / "out", 10)
    if remote is not None:
        commit_to_remote(fake_checkpoint(tmp / "elsewhere", 20), remote, "run")  # newer, but local wins


def _remote_only(tmp: Path, remote: Path | None) -> None:
    commit_to_remote(fake_checkpoint(tmp / "elsewhere", 10), remote, "run")
    commit_to_remote(fake_checkpoint(tmp / "elsewhere", 20), remote, "run")


def _nothing(tmp: Path, remote: Path | None) -> None:
    if remote is not None:
        remote.mkdir(parents=True)


def _half_written_local(tmp: Path, remote: Path | None) -> None:
    (fake_checkpoint(tmp / "out", 30, marker=False) / "trainer_state.json").unlink()
    _nothing(tmp, remote)


RESUME_CASES = [
    # id, remote folder (None: no remote configured), setup, expected path or exception
    ("local complete wins over a newer remote", "remote", _local, "out/checkpoint-10"),
    ("local only, no remote configured", None, _local, "out/checkpoint-10"),
    ("remote only: restored first", "remote", _remote_only, "out/checkpoint-20"),
    ("nothing anywhere", "remote", _nothing, None),
    ("nothing, no remote configured", None, _nothing, None),
    ("remote unreadable (drive not mounted)", "drive/MyDrive/backups", _nothing, RemoteError),
    ("only a half-written local checkpoint", "remote", _half_written_local, ResumeError),
]


@pytest.mark.parametrize("remote_rel, setup, expected", [c[1:] for c in RESUME_CASES],
                         ids=[c[0] for c in RESUME_CASES])
def test_resume_checkpoint(tmp_path, remote_rel, setup, expected):
    remote = tmp_path / remote_rel if remote_rel else None
    keys = {"output_dir": str(tmp_path / "out"), "run_name": "run"}
    if remote is not None:
        keys["gdrive_backup_dir"] = str(remote)
    setup(tmp_path, remote if expected is not RemoteError else None)  # an unmounted drive: no folder at all
    cfg = write_config(tmp_path / "cfg.json", **keys)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            resume_checkpoint(cfg)
        assert isinstance(info.value, SyncdError) and "\n" not in str(info.value)  # one line for the CLI
        if expected is RemoteError:
            assert "not starting over" in str(info.value) and not (tmp_path / "drive").exists()
        else:
            assert (tmp_path / "out" / "checkpoint-30" / "model.safetensors").exists()  # left as it was
        return
    got = resume_checkpoint(str(cfg))
    if expected is None:
        assert got is None
        return
    assert got == str(tmp_path / expected)
    assert inspect_checkpoint(Path(got)).reason == "marker"
    if setup is _remote_only:  # the remote's bytes, verified, in the local folder
        source = tmp_path / "elsewhere" / "checkpoint-20" / "model.safetensors"
        assert (Path(got) / "model.safetensors").read_bytes() == source.read_bytes()


# -- preemption inside a plain Trainer (this process) ---------------------------------

def _tiny_trainer(out: Path, max_steps: int, callbacks: list):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM, Trainer, TrainingArguments

    from tests.helpers.hf_train import RandomMLM

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                             save_strategy="steps", save_steps=5, report_to="none", use_cpu=True,
                             disable_tqdm=True, seed=0, dataloader_num_workers=0, logging_steps=1)
    return Trainer(model=RobertaForMaskedLM(cfg), args=args, train_dataset=RandomMLM(64, 16, 128),
                   callbacks=callbacks)


def test_sigterm_saves_the_step_with_the_marker_and_exits_75(tmp_path, capsys, one_thread):
    from transformers import TrainerCallback

    from syncd.hf import SyncdCallback

    class SigtermAt(TrainerCallback):  # as a spot VM's notice would, mid-run
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 6:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    trainer = _tiny_trainer(out, 1000, [SigtermAt(), SyncdCallback()])
    with pytest.raises(SystemExit) as info:
        trainer.train()
    assert info.value.code == PREEMPTED_EXIT_CODE
    assert signal.getsignal(signal.SIGTERM) == before  # the script's own handling is back
    ckpt = out / "checkpoint-7"  # the step under way when the signal came was finished, then saved
    assert inspect_checkpoint(ckpt).reason == "marker"
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 7
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "rng_state.pth").is_file()  # a resumable save
    assert inspect_checkpoint(out / "checkpoint-5").reason == "marker"  # the regular save before it
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-7"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"preempted: saved checkpoint-7; resume with trainer.train(resume_from_checkpoint={str(ckpt)!r})"

    resumed = _tiny_trainer(out, 10, [SyncdCallback(wait_at_end=False)])
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 10
    assert inspect_checkpoint(out / "checkpoint-10").reason == "marker"


# -- end to end: a plain Trainer script, SyncdCallback, a real daemon with settle 30 ---------

def test_plain_trainer_script_commits_each_checkpoint_at_once(tmp_path):
    remote, out = tmp_path / "remote", tmp_path / "out"
    cfg = write_config(tmp_path / "cfg.json", output_dir=str(out), run_name="plain", gdrive_backup_dir=str(remote),
                       syncd_settle_seconds=SETTLE_SECONDS, backup_keep_last=10, save_total_limit=10)
    log = tmp_path / "train.log"
    cmd = [PY, str(REPO / "tests" / "helpers" / "hf_train.py"), str(out), "--max-steps", "15", "--save-steps", "5",
           "--save-total-limit", "10", "--syncd", str(cfg), "--syncd-wait", "120"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    daemon = None
    try:
        assert proc.wait(240) == 0, log.read_text()[-3000:]
        daemon = running_pid(out / ".syncd")
        assert daemon is not None and daemon != proc.pid  # the callback started it, and it outlives the script
        text = log.read_text()
        steps = [5, 10, 15]
        delays = []
        for step in steps:
            name = f"checkpoint-{step}"
            manifest = remote / "plain" / name / MANIFEST_NAME
            wait_for(manifest.exists, 60, what=f"{name} committed")
            marker = out / name / MARKER
            assert inspect_checkpoint(out / name).reason == "marker"
            # Order of events: the marker, then the commit; the commit long before the settle
            # (counted from the checkpoint's last write) could have let syncd take it.
            saved, committed = marker.stat().st_mtime, manifest.stat().st_mtime
            assert saved <= committed < saved + SETTLE_SECONDS, (name, saved, committed)
            delays.append(committed - saved)
        daemon_log = (out / ".syncd" / "syncd.log").read_text()
        reasons = dict(re.findall(r"(checkpoint-\d+): detected complete \((\w+)", daemon_log))
        assert {f"checkpoint-{s}": "marker" for s in steps}.items() <= reasons.items(), reasons
        # The wait at the end saw the last commit and said where the copy is.
        assert f"checkpoint-15 committed to {remote}/plain/checkpoint-15" in text, text[-2000:]
        print(f"\nsave -> commit with settle {SETTLE_SECONDS:.0f} s: median {statistics.median(delays):.3f} s "
              f"over {len(delays)} checkpoints (max {max(delays):.3f} s)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        daemon = daemon or running_pid(out / ".syncd")
        if daemon is not None:
            os.kill(daemon, signal.SIGTERM)
            wait_for(lambda: running_pid(out / ".syncd") is None, 60, what="syncd to stop")


def test_ranks_restore_once_and_agree_on_the_step_to_stop_when_one_is_signalled(tmp_path):
    """Two real gloo ranks sharing an empty output folder: rank 0 restores from the remote, rank 1
    then finds its copy; only rank 1 gets SIGTERM, at step 3: both save and stop at step 3."""
    commit_to_remote(fake_checkpoint(tmp_path / "elsewhere", 20), tmp_path / "remote", "run")
    cfg = write_config(tmp_path / "cfg.json", output_dir=str(tmp_path / "out"), run_name="run",
                       gdrive_backup_dir=str(tmp_path / "remote"))
    helper = REPO / "tests" / "helpers" / "ddp_preempt.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)  # one machine: rank 1 is not a node's first process
    ranks = [subprocess.Popen([PY, str(helper), str(r), "2", str(tmp_path / "rendezvous"), "1", "3", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True) for r in range(2)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
    assert [p.returncode for p in ranks] == [0, 0], outputs
    stops = sorted(line for out in outputs for line in out.splitlines() if line.startswith("STOP "))
    assert stops == ["STOP 0 3 save=True", "STOP 1 3 save=True"], outputs
    restored = str(tmp_path / "out" / "checkpoint-20")
    assert f"RESUME 0 {restored}" in outputs[0] and f"RESUME 1 {restored}" in outputs[1], outputs
    assert "restored from the remote" in outputs[0] and "newest complete local checkpoint" in outputs[1], outputs



def test_callback_refuses_a_bad_config_and_a_config_for_another_folder(tmp_path):
    from types import SimpleNamespace

    from syncd.errors import ConfigError
    from syncd.hf import SyncdCallback

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SyncdCallback(tmp_path / "bad.json")  # at construction, before any step
    cfg = write_config(tmp_path / "cfg.json", output_dir=str(tmp_path / "a"), gdrive_backup_dir=str(tmp_path / "r"))
    cb = SyncdCallback(cfg)
    args = SimpleNamespace(output_dir=str(tmp_path / "b"), should_save=True)
    with pytest.raises(SyncdError, match="syncd would never see its checkpoints"):
        cb.on_train_begin(args, SimpleNamespace(), SimpleNamespace())
    assert running_pid(tmp_path / "a" / ".syncd") is None  # nothing was started for the wrong folder
