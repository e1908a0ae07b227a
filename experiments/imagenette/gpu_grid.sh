#!/usr/bin/env bash
# The full-width runs of the Imagenette grid on one GPU machine, four runs side by side (one small VGG at 64 px
# leaves most of a GPU idle), metrics and posteriors copied to OUT as each run ends.
#
#   bash experiments/imagenette/gpu_grid.sh DATA ROOT OUT [WORKERS]
#
# DATA: the Imagenette folder, or a copy small enough to travel to a lent machine (64 MiB): 146 pixels at JPEG
#   quality 60 is 54 MiB (python experiments/imagenette/shrink.py ../shared/data/imagenette .gpudata --side 146
#   --quality 60); the jittered runs need the 146 pixels (the largest S) and are left out below that;
# ROOT: scratch for the runs; OUT: receives metrics/*.json and probs/*.pt as each run ends. Back here, copy them
# into experiments/imagenette/metrics and experiments/imagenette/probs, then run.py --report-only.
# RUN_ARGS: more run.py options for every run (a quick trial: RUN_ARGS="--epochs 1 --batch 8 --limit 0").
# EXTRA_DRAWS: the runs trained beside A-w1 (default: more draws of the two best full-width recipes); set it
# empty when the device budget holds the grid alone.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash $0 DATA ROOT OUT [WORKERS]" >&2
    exit 2
fi
data=$1 root=$2 out=$3 workers=${4:-3}
here=$(dirname "$0")
python=${PYTHON:-python3}
mkdir -p "$out/logs"

one() {  # train, evaluate and hand back one run
    local name=$1
    "$python" "$here/run.py" --only "$name" --data "$data" --root "$root" --out "$out" --workers "$workers" \
        --no-report ${RUN_ARGS:-} >"$out/logs/$name.txt" 2>&1 || echo "$name: failed (see logs/$name.txt)"
    echo "$name: done at ${SECONDS}s"
}

"$python" "$here/run.py" --prepare-only --data "$data" --root "$root" --out "$out"
# A first (B-E start from it), beside more draws of the two best full-width recipes
for name in A-w1 ${EXTRA_DRAWS-A-LRN-w1-e32-s1 A-LRN-w1-e32-s2 D-w1-e32-s1}; do one "$name" & done
wait
for name in B-w1 C-w1 D-w1 E-w1; do one "$name" & done
wait
side=$("$python" -c "import sys, pathlib
from PIL import Image
print(min(Image.open(next(pathlib.Path(sys.argv[1], 'train').rglob('*.*'))).size))" "$data")
if [ "$side" -lt 146 ]; then
    echo "photos of $side pixels: the jittered runs (S up to 146) are left out"
    exit 0
fi
for name in C-jit-w1 D-jit-w1 E-jit-w1; do one "$name" & done
wait
