#!/usr/bin/env bash
# nestednet (flex) against PyTorch 2.9 on the CPU, the same nested transformers (3 levels of
# lm-tiny, batch 32 x 128 bytes; 3 levels of vit-tiny on 28x28, batch 64), the same threads:
# training steps timed by `cargo bench --bench transformers --train-only` and by
# scripts/torch_transformers.py, ALTERNATED for ROUNDS rounds in one invocation, so that a
# slower stretch of a shared machine falls on both. Prints each round and the ratio of the
# medians (the target: nestednet <= 1.0x PyTorch).
#
#   python3 -m venv .venv && .venv/bin/pip install torch==2.9.0 numpy
#   PYTHON=.venv/bin/python scripts/compare_transformer_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-20}
THREADS=${THREADS:-2}
export RAYON_NUM_THREADS=$THREADS
cargo bench --no-run -q --bench transformers
bench=$(ls -t target/release/deps/transformers-* | grep -v '\.d$' | head -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json() { "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
for model in lm vit; do
    ours=(); theirs=()
    for round in $(seq "$ROUNDS"); do
        "$bench" --models "$model" --train-only --steps "$STEPS" --json "$tmp/ours.json" >/dev/null
        ours+=("$(json "$tmp/ours.json" "d[0]['step_s']")")
        "$PYTHON" scripts/torch_transformers.py --model "$model" --threads "$THREADS" --steps "$STEPS" >"$tmp/theirs.json"
        theirs+=("$(json "$tmp/theirs.json" "d['step_s']")")
        echo "$model round $round: nestednet ${ours[-1]} s/step, PyTorch ${theirs[-1]} s/step"
    done
    "$PYTHON" - "$model" "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
model, ours, theirs = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
o, t = statistics.median(ours), statistics.median(theirs)
print(f"{model}: joint 3-level training step, median of {len(ours)} alternated rounds: nestednet {o*1e3:.1f} ms, PyTorch {t*1e3:.1f} ms, nestednet / PyTorch = {o/t:.2f}x")
PY
done
