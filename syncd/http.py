"""Optional local HTTP endpoint: the daemon's status as JSON and Prometheus metrics.

    GET /status    the same document as ``syncd status --json`` writes from the daemon
    GET /metrics   Prometheus text format
    GET /healthz   200 "ok" while the daemon runs

Bound to loopback unless ``syncd_http_host`` says otherwise: status names paths and
errors, which are nobody else's business.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

# (name, type, help, key in the status document)
METRICS = (
    ("syncd_uploaded_bytes_total", "counter", "Bytes sent to the remote.", "uploaded_bytes"),
    ("syncd_commits_total", "counter", "Checkpoints committed on the remote.", "commits"),
    ("syncd_failures_total", "counter", "Failed upload attempts.", "failures"),
    ("syncd_queue_length", "gauge", "Checkpoints waiting to be uploaded.", "queue_length"),
    ("syncd_lag_steps", "gauge", "Newest complete local step minus newest committed step.", "lag_steps"),
    ("syncd_lag_seconds", "gauge", "Age of the newest complete local checkpoint while it is not committed.",
     "lag_seconds"),
    ("syncd_newest_local_step", "gauge", "Newest complete local checkpoint step.", "newest_local_step"),
    ("syncd_newest_committed_step", "gauge", "Newest committed remote checkpoint step.", "newest_committed_step"),
    ("syncd_disk_free_bytes", "gauge", "Free bytes on the output folder's filesystem.", "disk_free_bytes"),
)


def render_metrics(status: dict) -> str:
    lines = ["# HELP syncd_up 1 while the daemon runs.", "# TYPE syncd_up gauge", "syncd_up 1"]
    for name, kind, help_, key in METRICS:
        value = status.get(key)
        if value is None:
            continue
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {float(value):g}"]
    errors = status.get("worker_errors") or {}
    lines += ["# HELP syncd_worker_errors_total Unexpected exceptions in each worker thread (each carried on).",
              "# TYPE syncd_worker_errors_total counter"]
    lines += [f'syncd_worker_errors_total{{worker="{w}"}} {n}' for w, n in sorted(errors.items())]
    return "\n".join(lines) + "\n"


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict], host: str, port: int) -> None:
        self.snapshot = snapshot

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/status":
                    body, ctype = json.dumps(outer.snapshot(), indent=1).encode(), "application/json"
                elif self.path == "/metrics":
                    body, ctype = render_metrics(outer.snapshot()).encode(), "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    body, ctype = b"ok\n", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                log.debug("http: " + fmt, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="syncd-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
