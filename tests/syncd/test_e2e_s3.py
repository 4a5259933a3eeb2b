"""The same mirror and restore flow through s3fs against moto's S3 server on loopback."""

from __future__ import annotations

import boto3

from syncd.manifest import MANIFEST_NAME
from tests.conftest import stop_gracefully, syncd, wait_for, write_config
from tests.syncd.test_e2e_folder import assert_same_files


def test_mirror_prune_restore_through_s3(tmp_path, procs, s3_server, s3_bucket):
    cfg = write_config(tmp_path / "cfg.json", output_dir="out", gdrive_backup_dir=f"s3://{s3_bucket}/backups",
                       run_name="run", backup_keep_last=2, syncd_settle_seconds=0.5, syncd_interval_seconds=2,
                       syncd_min_free_gb=0)
    daemon = procs.syncd_run(cfg, cwd=tmp_path)
    train = procs.hf_train(tmp_path / "out", "--max-steps", "15", "--save-steps", "5", "--save-total-limit", "5",
                           "--step-sleep", "0.1", cwd=tmp_path)
    assert train.wait(120) == 0
    assert syncd("wait", str(cfg), "--timeout", "60", cwd=tmp_path).returncode == 0
    s3 = boto3.client("s3", endpoint_url=s3_server["url"])

    def keys() -> set[str]:
        return {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}

    def manifests() -> list[str]:
        return sorted(k.split("/")[2] for k in keys() if k.endswith(MANIFEST_NAME))

    wait_for(lambda: manifests() == ["checkpoint-10", "checkpoint-15"], 30, what="s3 to hold the newest two")
    # Pruned means gone whole, not only un-committed.
    wait_for(lambda: not any("/checkpoint-5/" in k for k in keys()), 30, what="checkpoint-5 pruned")
    assert stop_gracefully(daemon) == 0

    r = syncd("verify", str(cfg), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count(": ok") == 2, r.stdout + r.stderr
    r = syncd("list", str(cfg), "--remote", cwd=tmp_path)
    assert "checkpoint-15\tcommitted" in r.stdout
    fresh = tmp_path / "fresh"
    r = syncd("restore", str(cfg), "--to", str(fresh), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    restored = fresh / "checkpoint-15"
    mirror = tmp_path / "mirror"
    for k in keys():
        if "/checkpoint-15/" in k:
            dest = mirror / k.split("/checkpoint-15/", 1)[1]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read())
    assert_same_files(tmp_path / "out" / "checkpoint-15", mirror)
    assert_same_files(restored, mirror)
