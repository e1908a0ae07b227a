#!/usr/bin/env bash
# The full-width runs of the Imagenette grid on one GPU machine, four runs side by side (one small VGG at 64 px
# leaves most of a GPU idle), metrics and posteriors copied to OUT as each run ends.
#
#   bash experiments/imagenette/gpu_grid.sh DATA ROOT OUT [WORKERS]
#
# DATA: the Imagenette folder, or the 84-pixel copy that travels to a lent machine
#   (python experiments/imagenette/shrink.py ../shared/data/imagenette .gpudata --side 84);
# ROOT: scratch for the runs; OUT: receives metrics/*.json and probs/*.pt. Back here, copy OUT/metrics into
# experiments/imagenette/metrics and OUT/probs into runs/imagenette/probs, then run.py --report-only.
# RUN_ARGS: more run.py options for every run (a quick trial: RUN_ARGS="--epochs 1 --batch 8 --limit 0").
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash $0 DATA ROOT OUT [WORKERS]" >&2
    exit 2
fi
data=$1 root=$2 out=$3 workers=${4:-3}
here=$(dirname "$0")
python=${PYTHON:-python3}
mkdir -p "$out/probs" "$out/logs"

one() {  # train, evaluate and hand back one run
    local name=$1
    "$python" "$here/run.py" --only "$name" --data "$data" --root "$root" --out "$out" --workers "$workers" \
        --no-report ${RUN_ARGS:-} >"$out/logs/$name.txt" 2>&1 || echo "$name: failed (see logs/$name.txt)"
    cp "$root/probs/$name.pt" "$out/probs/" 2>/dev/null || true
    echo "$name: done at ${SECONDS}s"
}

"$python" "$here/run.py" --prepare-only --data "$data" --root "$root" --out "$out"
# A first (B-E start from it), beside more draws of the two best full-width recipes
for name in A-w1 A-LRN-w1-e32-s1 A-LRN-w1-e32-s2 D-w1-e32-s1; do one "$name" & done
wait
for name in B-w1 C-w1 D-w1 E-w1; do one "$name" & done
wait
