#!/usr/bin/env bash
# GPU check: on a machine with CUDA, in a few minutes, measure what distillscope gets from it
# (a shrunk quickstart on CUDA and its wall time; resnet20's training step on CUDA vs the CPU
# in fp32 and bf16; two identical deterministic CUDA runs compared tensor by tensor) and print
# a summary; the numbers go to benchmarks/results/gpu_check.json. Without CUDA: one line, exit 0.
#
#   benchmarks/gpu_check.sh [--device cuda:N] [--data-root DIR] [--out FILE] [--keep DIR]
#                           [--images N] [--cpu-batches N]
#
# The Python used: $PYTHON, else the repository's .venv/bin/python, else python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
    python="$repo/.venv/bin/python"
else
    python="python3"
fi
exec "$python" "$here/gpu_check.py" "$@"
