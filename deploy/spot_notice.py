#!/usr/bin/env python3
"""Turn a cloud's preemption notice, which only its metadata service shows, into a SIGTERM.

    python3 deploy/spot_notice.py --cloud aws --pid "$TRAINER_PID"      # beside the trainer
    python3 deploy/spot_notice.py --cloud azure --pid 1234 --pid 5678   # several processes

AWS (spot interruption, two minutes' notice) and Azure (Scheduled Events ``Preempt``, at
least 30 s) announce a preemption only in the instance metadata; the OS hears nothing
until the machine is switched off. This script polls the metadata every few seconds and,
the first time a notice shows, sends SIGTERM once to each ``--pid`` and exits 0. The
trainer (or any Trainer script with ``syncd.hf.SyncdCallback``) then finishes its step,
saves a checkpoint with syncd's marker and exits 75; syncd uploads for as long as the
machine lives. GCP sends an ACPI shutdown (the OS stops its services, systemd units
get SIGTERM), so nothing is needed there; ``--cloud gcp`` polls its ``preempted`` flag
for containers that do not see the shutdown.

Standard library only; ``--endpoint`` points it at another metadata server (tests).
A metadata server that cannot be reached is retried quietly: a notice is never invented.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

CLOUDS = {
    "aws": "http://169.254.169.254",
    "azure": "http://169.254.169.254",
    "gcp": "http://metadata.google.internal",
}
TIMEOUT_SECONDS = 2.0  # the metadata service is local; a slow answer is retried next round


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _aws_token(base: str) -> str | None:
    """IMDSv2 session token; None where only IMDSv1 answers."""
    req = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as r:
            return r.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def notice(cloud: str, base: str) -> str | None:
    """A one-line description of a pending preemption, or None when there is none."""
    if cloud == "aws":
        token = _aws_token(base)
        headers = {"X-aws-ec2-metadata-token": token} if token else {}
        status, body = _get(f"{base}/latest/meta-data/spot/instance-action", headers)
        if status == 200:  # 404 until an interruption is scheduled
            action = json.loads(body or b"{}")
            return f"AWS spot interruption: {action.get('action', '?')} at {action.get('time', '?')}"
        return None
    if cloud == "azure":
        status, body = _get(f"{base}/metadata/scheduledevents?api-version=2020-07-01", {"Metadata": "true"})
        if status != 200:
            return None
        for event in json.loads(body or b"{}").get("Events", []):
            if event.get("EventType") == "Preempt":
                return f"Azure Scheduled Event Preempt, not before {event.get('NotBefore', '?')}"
        return None
    status, body = _get(f"{base}/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"})
    return "GCP instance preempted" if status == 200 and body.strip().upper() == b"TRUE" else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cloud", choices=sorted(CLOUDS), required=True)
    p.add_argument("--pid", type=int, action="append", required=True, help="process to send SIGTERM (repeatable)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls (AWS advises every 5 s)")
    p.add_argument("--endpoint", default=None, help="metadata server base URL (default: the cloud's own)")
    a = p.parse_args(argv)
    base = (a.endpoint or CLOUDS[a.cloud]).rstrip("/")
    while True:
        try:
            found = notice(a.cloud, base)
        except (urllib.error.URLError, OSError, ValueError):
            found = None  # unreachable or garbled: poll again, never guess
        if found:
            print(f"spot_notice: {found}; sending SIGTERM to {', '.join(map(str, a.pid))}", file=sys.stderr,
                  flush=True)
            for pid in a.pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    print(f"spot_notice: process {pid} is already gone", file=sys.stderr)
            return 0
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
