"""The fsspec remote against moto's S3 server on loopback: what the conformance suite cannot say.

Each test names the failure it guards against: a URL with an empty key segment, a
half-sent file committed at its final key, an abandoned multipart upload that is
billed forever, a bucket typo that reads as "nothing there", a read that fails with
a raw library error, missing credentials reported as an unreachable remote.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from syncd.errors import Cancelled, CredentialsError, RemoteError
from syncd.hashing import CHUNK_BYTES
from syncd.remotes.fsspec_remote import FsspecRemote, stale_uploads


@pytest.fixture
def s3(s3_server):
    return boto3.client("s3", endpoint_url=s3_server["url"])


def _keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _uploads(s3, bucket: str) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


# -- 1. one key for every operation ---------------------------------------------

@pytest.mark.parametrize("suffix", ["//backups", "/backups/", "//backups//deep/", "/backups//deep"])
def test_url_with_empty_segments_means_one_key_for_every_operation(s3, s3_bucket, tmp_path, suffix):
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    r = FsspecRemote(f"s3://{s3_bucket}{suffix}")
    key = "/".join(s for s in suffix.split("/") if s)
    r.put_file(src, "run/checkpoint-5/a.bin")
    r.write_bytes("run/checkpoint-5/syncd-manifest.json", b"{}")
    assert _keys(s3, s3_bucket) == {f"{key}/run/checkpoint-5/a.bin", f"{key}/run/checkpoint-5/syncd-manifest.json"}
    st = r.stat("run/checkpoint-5/a.bin")
    assert st is not None and st.size == 3
    assert r.stat("run/checkpoint-5/syncd-manifest.json") is not None
    assert r.list_dirs("run") == ["checkpoint-5"]
    assert [f.path for f in r.list_files("run/checkpoint-5")] == ["a.bin", "syncd-manifest.json"]
    with r.open_read("run/checkpoint-5/a.bin") as fh:
        assert fh.read() == b"abc"
    r.delete("run/checkpoint-5")
    assert _keys(s3, s3_bucket) == set()
    assert r.stat("run/checkpoint-5/a.bin") is None


# -- 2. an interrupted upload never lands at its key ----------------------------

def _raise_after(limit: int, exc: BaseException):
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if sent >= limit:
            raise exc

    return progress


@pytest.mark.parametrize(("size", "stop_after", "exc", "raised"), [
    # Several parts already sent when the daemon is told to stop.
    (4 * CHUNK_BYTES + 1, 3 * CHUNK_BYTES, Cancelled(), Cancelled),
    (4 * CHUNK_BYTES + 1, 3 * CHUNK_BYTES, RuntimeError("disk read failed"), RemoteError),
    # Everything buffered, nothing sent yet: closing would put the object whole.
    (1000, 1000, Cancelled(), Cancelled),
], ids=["cancelled-multipart", "error-multipart", "cancelled-small"])
def test_interrupted_put_leaves_no_object_and_no_upload(s3, s3_bucket, tmp_path, size, stop_after, exc, raised):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    r = FsspecRemote(f"s3://{s3_bucket}/backups")
    with pytest.raises(raised):
        r.put_file(src, "run/checkpoint-5/model.safetensors", progress=_raise_after(stop_after, exc))
    assert _keys(s3, s3_bucket) == set()
    assert _uploads(s3, s3_bucket) == set()
    assert r.stat("run/checkpoint-5/model.safetensors") is None
    # The remote stays usable, and a retry lands whole.
    r.put_file(src, "run/checkpoint-5/model.safetensors")
    assert r.stat("run/checkpoint-5/model.safetensors").size == size


# -- 3. abandoned multipart uploads are aborted at start ------------------------

def test_abort_incomplete_uploads_under_the_run_only(s3, s3_bucket):
    for key in ("backups/run/checkpoint-5/model.safetensors", "backups/run/checkpoint-10/optimizer.pt",
                "backups/run-2/checkpoint-5/model.safetensors", "backups/other/x", "elsewhere/run/x"):
        up = s3.create_multipart_upload(Bucket=s3_bucket, Key=key)
        s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024)
    r = FsspecRemote(f"s3://{s3_bucket}//backups/")
    assert r.abort_incomplete_uploads("run") == 2
    assert _uploads(s3, s3_bucket) == {"backups/run-2/checkpoint-5/model.safetensors", "backups/other/x",
                                       "elsewhere/run/x"}
    assert r.abort_incomplete_uploads("run") == 0


def test_abort_incomplete_uploads_is_s3_only():
    assert FsspecRemote("memory://abort-test/root").abort_incomplete_uploads("run") == 0


T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(("key", "initiated", "stale"), [
    pytest.param("base/run/checkpoint-5/a", T0 - timedelta(hours=1), True, id="an-hour-old"),
    pytest.param("base/run/checkpoint-5/a", T0 - timedelta(seconds=1), True, id="a-second-old"),
    pytest.param("base/run/checkpoint-5/a", T0, False, id="same-instant"),  # could be this process's own
    pytest.param("base/run/checkpoint-5/a", T0 + timedelta(seconds=5), False, id="newer"),
    pytest.param("base/run/checkpoint-5/a", T0.replace(tzinfo=None) - timedelta(hours=1), True, id="naive-utc"),
    pytest.param("base/run-2/checkpoint-5/a", T0 - timedelta(hours=1), False, id="sibling-run"),
    pytest.param("base/run", T0 - timedelta(hours=1), False, id="the-folder-name-itself"),
    pytest.param("other/base/run/a", T0 - timedelta(hours=1), False, id="elsewhere"),
    pytest.param("base/run/a", None, False, id="no-date"),  # nothing proves it is old
])
def test_which_uploads_are_stale(key, initiated, stale):
    up = {"Key": key, "UploadId": "u1"}
    if initiated is not None:
        up["Initiated"] = initiated
    assert (stale_uploads([up], "base/run/", T0) == [up]) is stale


# -- 4. a missing bucket is an error, a missing prefix is empty -----------------

def test_missing_bucket_is_an_error_not_an_empty_remote(s3_server):
    r = FsspecRemote("s3://no-such-bucket-for-syncd/backups")
    for op in (lambda: r.list_dirs("run"), lambda: r.list_files("run/checkpoint-5"),
               lambda: r.stat("run/checkpoint-5/syncd-manifest.json")):
        with pytest.raises(RemoteError, match="bucket no-such-bucket-for-syncd does not exist"):
            op()


def test_missing_prefix_in_an_existing_bucket_is_empty(s3_bucket):
    r = FsspecRemote(f"s3://{s3_bucket}/never/written")
    assert r.list_dirs("run") == []
    assert r.list_files("run") == []
    assert r.stat("run/checkpoint-5/syncd-manifest.json") is None


# -- 5. a failed read is a RemoteError ------------------------------------------

def test_read_of_a_key_gone_since_listing_is_a_remote_error(s3, s3_bucket, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 * CHUNK_BYTES))
    r = FsspecRemote(f"s3://{s3_bucket}/backups")
    r.put_file(src, "run/checkpoint-5/a.bin")
    assert [f.path for f in r.list_files("run/checkpoint-5")] == ["a.bin"]
    with r.open_read("run/checkpoint-5/a.bin") as fh:
        assert len(fh.read(CHUNK_BYTES)) == CHUNK_BYTES
        s3.delete_object(Bucket=s3_bucket, Key="backups/run/checkpoint-5/a.bin")
        with pytest.raises(RemoteError, match="read run/checkpoint-5/a.bin"):
            fh.read()
    with pytest.raises(RemoteError, match="read run/checkpoint-5/a.bin"):
        r.open_read("run/checkpoint-5/a.bin")
    assert r.stat("run/checkpoint-5/a.bin") is None


# -- 6. missing credentials are a credentials problem ---------------------------

def test_missing_credentials_is_a_credentials_error(s3_bucket, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    r = FsspecRemote(f"s3://{s3_bucket}/backups")
    with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID") as caught:
        r.list_dirs("run")
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
    with pytest.raises(CredentialsError):
        r.write_bytes("run/x", b"x")
