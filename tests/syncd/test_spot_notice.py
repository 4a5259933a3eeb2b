"""deploy/spot_notice.py against a loopback metadata server: a notice that only the cloud's
metadata service shows (AWS, Azure; GCP's flag) becomes one SIGTERM to the named process."""

from __future__ import annotations

import http.server
import signal
import subprocess
import threading

import pytest

from tests.conftest import PY, REPO

NOTICES = {  # cloud: (path polled, headers it must send, the body of a notice)
    "aws": ("/latest/meta-data/spot/instance-action", {"X-aws-ec2-metadata-token": "tok"},
            b'{"action": "terminate", "time": "2026-11-28T12:00:00Z"}'),
    "azure": ("/metadata/scheduledevents?api-version=2020-07-01", {"Metadata": "true"},
              b'{"Events": [{"EventType": "Freeze"}, {"EventType": "Preempt", "NotBefore": "soon"}]}'),
    "gcp": ("/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"}, b"TRUE"),
}


@pytest.mark.parametrize("cloud", sorted(NOTICES))
def test_spot_notice_sends_sigterm_once_the_metadata_shows_a_notice(tmp_path, cloud):
    path, headers, body = NOTICES[cloud]
    polls = []

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # IMDSv2 token
            self._answer(200, b"tok")

        def do_GET(self):
            assert self.path == path and all(self.headers.get(k) == v for k, v in headers.items()), self.headers
            polls.append(self.path)
            if len(polls) < 3:  # no notice yet: AWS 404, the others an empty answer
                self._answer(404, b"") if cloud == "aws" else self._answer(
                    200, b'{"Events": []}' if cloud == "azure" else b"FALSE")
            else:
                self._answer(200, body)

        def _answer(self, code, data):
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        r = subprocess.run([PY, str(REPO / "deploy" / "spot_notice.py"), "--cloud", cloud, "--pid", str(target.pid),
                            "--interval", "0.05", "--endpoint", f"http://127.0.0.1:{server.server_port}"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert target.wait(30) == -signal.SIGTERM
        assert len(polls) == 3 and "sending SIGTERM" in r.stderr
    finally:
        server.shutdown()
        if target.poll() is None:
            target.kill()
            target.wait(10)
