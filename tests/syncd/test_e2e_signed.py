"""syncd_manifest_key: a remote tampered by someone without the key is refused."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import syncd
from tests.syncd.test_e2e_folder import make_config, mirrored_run


def test_forged_checkpoint_is_refused_with_a_key(tmp_path, procs):
    cfg = mirrored_run(tmp_path, procs, syncd_manifest_key="correct horse battery staple")
    newest = tmp_path / "remote" / "run" / "checkpoint-10"
    doc = json.loads((newest / "syncd-manifest.json").read_text())
    assert len(doc["hmac"]) == 64
    assert "correct horse" not in (tmp_path / "syncd-1.log").read_text()

    # The forger replaces the weights and rewrites the checksums; only the HMAC is beyond reach.
    evil = b"not the weights you trained"
    (newest / "model.safetensors").write_bytes(evil)
    for f in doc["files"]:
        if f["path"] == "model.safetensors":
            f.update(size=len(evil), md5=hashlib.md5(evil).hexdigest(), sha256=hashlib.sha256(evil).hexdigest())
    (newest / "syncd-manifest.json").write_text(json.dumps(doc))

    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 4 and "wrong signature" in r.stdout
    r = syncd("restore", str(cfg), "--to", str(tmp_path / "fresh"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["checkpoint-5"]
    # Without the key the forgery is self-consistent, which is exactly why the key exists.
    plain = make_config(tmp_path)
    r = syncd("restore", str(plain), "--to", str(tmp_path / "naive"), cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "naive" / "checkpoint-10" / "model.safetensors").read_bytes() == evil
