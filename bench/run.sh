#!/usr/bin/env bash
# `make bench`: every benchmark, each printing ratios against a peer measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! command -v rclone >/dev/null; then
  echo "rclone is the peer for the mirror benchmark: installing Debian's rclone" >&2
  (apt-get install -y -q rclone || (apt-get update -q && apt-get install -y -q rclone)) >/dev/null 2>&1 \
    || echo "could not install rclone; its column will be skipped" >&2
fi
echo "== syncd"; "$PY" bench/bench_syncd.py "$@"
echo; echo "== end to end: syncd run + wait vs rclone copy, cold cache (mirror and restore)"
"$PY" bench/bench_e2e.py
for b in bench/bench_trainer.py bench/bench_gdrive.py; do
  if [ -f "$b" ]; then echo; echo "== $b"; "$PY" "$b"; fi
done
