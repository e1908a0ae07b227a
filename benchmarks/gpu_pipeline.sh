#!/usr/bin/env bash
# Issue 17 on a lent GPU, after experiments/imagenette/gpu_grid.sh: the batched path's GPU tests, then the
# input-pipeline benchmark (VGG16 at 224, S in [256, 512]), in about 3 minutes.
#
#   bash benchmarks/gpu_pipeline.sh PHOTOS OUT [BUDGET_SECONDS]
#
# PHOTOS: Imagenette photos at their stored size that travelled with the working tree. Prepare them here, once:
#   echo /.gpuphotos/ >> .git/info/exclude
#   python benchmarks/input_pipeline.py --prepare .gpuphotos --limit 2000     # about 20 MiB
#   The grid's .gpudata (54 MiB at 146 pixels) and these do not fit one call's 64 MiB together, so the grid
#   and this script are two calls on the same warm machine, each carrying its own folder:
#   run(command="bash experiments/imagenette/gpu_grid.sh .gpudata /tmp/grid $OUT", carry=[".gpudata"], timeout_s=600)
#   run(command="bash benchmarks/gpu_pipeline.sh .gpuphotos $OUT", carry=[".gpuphotos"], timeout_s=240)
#   A 15-minute device budget holds both only if the grid ends within about 10 minutes: with less than
#   5 minutes left after it, give this script BUDGET_SECONDS (default 170) that fit, or run it first.
# OUT: receives gpu_tests.txt, input_pipeline.{json,md} and input_pipeline.txt. Back here, copy the .json and
#   .md into benchmarks/results/ and the figures into docs/training.md and the README.
set -uo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 PHOTOS OUT [BUDGET_SECONDS]" >&2
    exit 2
fi
photos=$1 out=$2 budget=${3:-170}
python=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu_tests.txt"
# the GPU tests first (tens of seconds): a wrong GPU path should be known before its speed
timeout 90 "$python" -m pytest -q -x -p no:cacheprovider tests/test_batched.py -k "gpu or cuda" -rs 2>&1 \
    | tee -a "$out/gpu_tests.txt" || echo "GPU tests failed or timed out (gpu_tests.txt); measuring anyway"
timeout $((budget + 30)) "$python" benchmarks/input_pipeline.py --data "$photos" --limit 2000 --seconds 12 \
    --budget "$budget" --out "$out" 2>&1 | tee "$out/input_pipeline.txt"
