#!/usr/bin/env bash
# One prepared GPU check (at most ~8 minutes): training images/s of the cifar preset at batch 256,
# fp32 and bf16, with and without torch.compile, against a bare loop of the same network in the same
# run; sampling images/s (Heun, 18 steps); peak memory. Prints one table.
#   bash bench/gpu_check.sh            (on a machine with a CUDA GPU, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PY" bench/train_speed.py --presets cifar --batch 256 --steps 20 --device cuda \
  --precision fp32,bf16 --compile off,on --sample
