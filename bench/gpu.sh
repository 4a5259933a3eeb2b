#!/usr/bin/env bash
# GPU figures (issue 9): TESS vs plain MLM step time and peak memory at roberta-base shape,
# fp16, batch 16, length 256, and one save with syncd mirroring beside the trainer.
#   bash bench/gpu.sh            on a CUDA machine (an H100/H200-class card when lent one)
#   bash bench/gpu.sh --smoke    tiny shape on the CPU: checks that the script still runs
# Without a GPU it says so and runs the smoke mode instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ "${1:-}" != "--smoke" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
  elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no GPU on this machine: these are NOT GPU figures; running the CPU smoke mode instead"
    exec "$PY" bench/bench_gpu.py --smoke "$@"
  fi
fi
exec "$PY" bench/bench_gpu.py "$@"
