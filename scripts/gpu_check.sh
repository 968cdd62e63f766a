#!/usr/bin/env bash
# Every GPU check of igm in one command: the CUDA tests (pytest -m gpu), the image speed switches
# (bench_images.py, dcgan and resnet), igm against hand-written loops (bench_toy.py) and DDP on
# 2 GPUs; one Markdown table, printed and written to $OUT/gpu_check.md (else ./gpu_check.md).
# Under 8 minutes on one GPU. Without CUDA, or with --cpu, what needs CUDA is skipped (and
# says so) and the rest runs tiny. Needs only the repository and `pip install ".[test]"`.
#
#   bash scripts/gpu_check.sh          # on the GPU machine
#   bash scripts/gpu_check.sh --cpu    # CPU mode
#
# The checks are in scripts/gpu_check.py; PYTHON picks the interpreter (default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
exec "$PYTHON" scripts/gpu_check.py "$@"
