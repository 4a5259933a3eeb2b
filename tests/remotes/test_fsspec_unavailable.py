"""An fsspec remote tells errors that may pass from verdicts, as botocore and s3fs raise them.

``RemoteUnavailable`` lets the daemon start and retry each pass; anything else about
the remote fails the start. The errors are botocore's own, translated by s3fs as in
its calls (the cause kept, or only the errno).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from s3fs.errors import translate_boto_error

from syncd.errors import CredentialsError, RemoteError, RemoteUnavailable
from syncd.remotes.fsspec_remote import FsspecRemote


def _client(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


CASES = [
    ("slow-down", lambda: translate_boto_error(_client("SlowDown", 503)), RemoteUnavailable),
    ("slow-down-no-cause", lambda: translate_boto_error(_client("SlowDown", 503), set_cause=False), RemoteUnavailable),
    ("internal-error", lambda: translate_boto_error(_client("InternalError", 500)), RemoteUnavailable),
    ("read-timeout", lambda: ReadTimeoutError(endpoint_url="http://s3"), RemoteUnavailable),
    ("no-such-bucket", lambda: translate_boto_error(_client("NoSuchBucket", 404)), RemoteError),
    ("access-denied", lambda: translate_boto_error(_client("AccessDenied", 403)), RemoteError),
    ("no-such-host", lambda: EndpointConnectionError(endpoint_url="http://nowhere.invalid"), RemoteError),
    ("rejected-key", lambda: translate_boto_error(_client("InvalidAccessKeyId", 403)), CredentialsError),
]


@pytest.mark.parametrize("make, kind", [(m, k) for _, m, k in CASES], ids=[c[0] for c in CASES])
def test_errors_that_may_pass_are_remote_unavailable_and_only_those(tmp_path, make, kind):
    remote = FsspecRemote(f"file://{tmp_path}")
    err = remote._wrap("write run/x", make())
    assert type(err) is kind, (type(err), err)
    assert str(err).startswith("write run/x: ") and "\n" not in str(err)
