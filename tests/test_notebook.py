"""notebooks/colab_tess.ipynb runs top to bottom (nbclient, a real kernel, CPU), then
again as a fresh runtime would: the local disk wiped, only the setup cells and the
fresh-runtime cell, which restore from the folder remote and resume."""

from __future__ import annotations

import json
import shutil

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.trainer.trainer_testlib import tiny_config

NOTEBOOK = REPO / "notebooks" / "colab_tess.ipynb"


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def execute(nb, cwd) -> None:
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()


def outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_the_test_switch_guards_only_install_mount_and_login():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    guarded = [c.source for c in nb.cells if c.cell_type == "code" and "TEST" in c.source]
    assert len(guarded) == 3  # where it is set, the pip install, the remote (mount and login)
    assert 'os.environ.get("TESSYNC_NOTEBOOK_TEST")' in guarded[0]
    assert "pip" in guarded[1] and "drive.mount" in guarded[2] and "authenticate_user" in guarded[2]
    for source in guarded[1:]:
        assert source.count("if not TEST:") == source.count("TEST"), "TEST may only skip, never steer"


def test_notebook_runs_top_to_bottom_then_restores_and_resumes_in_a_fresh_runtime(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, max_steps=20, save_steps=10, eval_strategy="no",
                         syncd_settle_seconds=1, syncd_interval_seconds=1, syncd_wait_timeout_seconds=120)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    for key, value in {"TESSYNC_NOTEBOOK_TEST": "1", "TESSYNC_REPO": str(REPO), "TESSYNC_WORK": str(tmp_path),
                       "TESSYNC_CONFIG": str(tmp_path / "tiny.json"), "TESSYNC_REMOTE": str(tmp_path / "remote"),
                       "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "tess_output" / "tiny"
    remote_run = tmp_path / "remote" / "tiny"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        # 1. Top to bottom, every cell as written (nbclient raises on any failing cell).
        execute(nb, tmp_path)
        text = outputs(nb)
        assert "syncd started" in text and "newest checkpoint committed" in text and "syncd stopped" in text
        assert "nothing to restore" in text  # the fresh-runtime cell, in a runtime that kept its disk
        assert (remote_run / "checkpoint-20" / "syncd-manifest.json").is_file()
        assert (remote_run / "final" / "syncd-manifest.json").is_file()
        assert (out / "loss.png").is_file()
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 1

        # 2. A new runtime: the local disk is gone, the remote stays; the run goes on to 30 steps.
        shutil.rmtree(tmp_path / "tess_output")
        (tmp_path / "tess_run.json").unlink()
        (tmp_path / "tiny.json").write_text(json.dumps({**config, "max_steps": 30}))
        fresh = nbformat.read(NOTEBOOK, as_version=4)
        fresh.cells = [c for c in fresh.cells if {"setup", "fresh-runtime"} & set(tags(c))]
        execute(fresh, tmp_path)
        assert f"restored {out / 'checkpoint-20'}" in outputs(fresh)
        steps = [json.loads(line)["step"] for line in (out / "loss_log.jsonl").read_text().splitlines()]
        assert steps == list(range(21, 31))  # trained on from the restored step, nothing redone
        assert json.loads((out / "resume_log.jsonl").read_text())["step"] == 20
        assert json.loads((out / "training-complete.json").read_text())["step"] == 30
        assert any("image/png" in o.get("data", {}) for c in fresh.cells for o in c.get("outputs", []))
        weights = (out / "model.safetensors").read_bytes()
        assert any((d / "model.safetensors").read_bytes() == weights for d in remote_run.glob("final*")
                   if (d / "syncd-manifest.json").is_file())  # the new final model is committed
    finally:
        from syncd.cli import main as syncd_main

        if (tmp_path / "tess_run.json").is_file():
            syncd_main(["stop", str(tmp_path / "tess_run.json")])
