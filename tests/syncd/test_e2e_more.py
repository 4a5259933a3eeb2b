"""More of the daemon's duties with real processes: polling, the final model, local
retention, and the low-disk prune."""

from __future__ import annotations

import json

from tests.conftest import stop_gracefully, syncd, wait_for
from tests.syncd.test_e2e_folder import assert_same_files, committed, make_config


def test_polling_observer_mirrors_too(tmp_path, procs):
    cfg = make_config(tmp_path)
    daemon = procs.syncd_run(cfg, "--poll", cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "10", "--save-steps", "5", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    assert committed(tmp_path / "remote" / "run") == ["checkpoint-5", "checkpoint-10"]
    assert stop_gracefully(daemon) == 0


def test_final_model_is_mirrored_and_replaced_when_saved_again(tmp_path, procs):
    cfg = make_config(tmp_path)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    out = tmp_path / "out"
    train = procs.hf_train(out, "--max-steps", "5", "--save-steps", "5", "--save-final", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    final = tmp_path / "remote" / "run" / "final"
    manifest = json.loads((final / "syncd-manifest.json").read_text())
    assert {"config.json", "model.safetensors"} <= {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        assert (final / f["path"]).read_bytes() == (out / f["path"]).read_bytes()
    first = (final / "model.safetensors").read_bytes()

    # Training goes on and saves the final model again: the remote follows.
    more = procs.hf_train(out, "--max-steps", "10", "--save-steps", "5", "--save-final", "--resume", "auto",
                          cwd=tmp_path)
    assert more.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    # A final model saved again is a new version (final.v2); the old one goes once it is committed.
    wait_for(lambda: sorted(p.name for p in final.parent.iterdir() if p.is_dir()) == ["checkpoint-10", "checkpoint-5",
                                                                                      "final.v2"],
             30, what="only the new final version left")
    assert (final.parent / "final.v2" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() != first
    assert stop_gracefully(daemon) == 0


def test_local_retention_keeps_newest_and_best(tmp_path, procs):
    cfg = make_config(tmp_path, save_total_limit=2, backup_keep_last=1)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    out = tmp_path / "out"
    # The trainer keeps everything (its own limit is high): syncd enforces the config's 2.
    train = procs.hf_train(out, "--max-steps", "20", "--save-steps", "5", "--save-total-limit", "50", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    wait_for(lambda: sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-20"], 30,
             what="local retention to keep the newest two")
    assert not list((out / ".syncd" / "trash").iterdir())
    # Name checkpoint-15 the best one (as metric_for_best_model would): it outlives the limit.
    state = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())
    state["best_model_checkpoint"] = str(out / "checkpoint-15")
    (out / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(state))
    more = procs.hf_train(out, "--max-steps", "30", "--save-steps", "5", "--save-total-limit", "50",
                          "--resume", "auto", cwd=tmp_path)
    assert more.wait(120) == 0
    wait_for(lambda: sorted(p.name for p in out.glob("checkpoint-*")) ==
             ["checkpoint-15", "checkpoint-25", "checkpoint-30"], 30, what="retention after more saves")
    assert stop_gracefully(daemon) == 0


def test_low_disk_prunes_to_newest_and_newest_committed(tmp_path, procs):
    out = tmp_path / "out"
    train = procs.hf_train(out, "--max-steps", "20", "--save-steps", "5", "--save-total-limit", "50", cwd=tmp_path)
    assert train.wait(120) == 0
    # An absurd free-space floor puts the daemon under pressure from its first check.
    cfg = make_config(tmp_path, save_total_limit=10, syncd_min_free_gb=10**9, syncd_interval_seconds=0.5)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    wait_for(lambda: sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20"], 30,
             what="the low-disk prune")
    assert stop_gracefully(daemon) == 0
    assert "low disk" in (tmp_path / "syncd-1.log").read_text()
    assert_same_files(out / "checkpoint-20", tmp_path / "remote" / "run" / "checkpoint-20")
