#!/usr/bin/env bash
# GPU check for the sessions that are lent a machine with an NVIDIA GPU (budget: under 8 min).
#
#   scripts/gpu_check.sh            # build with `cuda`, run the shared backend tests on cuda
#                                   # (and flex as the reference), then the speed benchmark
#
# Prints one summary table at the end. Needs: a CUDA driver, and the prebuilt LLVM that
# cubecl-cuda's build fetches from github.com/tracel-ai/tracel-llvm: either network access at
# build time or the bundle already in ~/.cache/tracel (copy it from a machine that built once).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export CARGO_PROFILE_RELEASE_DEBUG=0
out=${OUT:-target/gpu-check}
mkdir -p "$out"
started=$(date +%s)
stamp() { echo "[gpu-check $(( $(date +%s) - started ))s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
    echo "!!! gpu_check: nvidia-smi failed: no NVIDIA GPU or driver here" >&2; exit 1; }
if ! ls ~/.cache/tracel/tracel-llvm-* >/dev/null 2>&1; then
    echo "note: no LLVM bundle in ~/.cache/tracel: the cuda build will try to download it"
fi

stamp "== build (release, features flex + cuda)"
if ! cargo test --release --features flex,cuda --test backends --no-run >"$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    echo "!!! gpu_check: the cuda build FAILED (log: $out/build.log). If the log mentions" >&2
    echo "!!! tracel-llvm, the prebuilt LLVM could not be downloaded: see the header of this script." >&2
    exit 1
fi
cargo bench --features flex,cuda --bench speed --no-run >>"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
stamp "built"

stamp "== shared backend tests on cuda (flex is the reference)"
timeout 240 cargo test --release --features flex,cuda --test backends -- --include-ignored --show-output \
    2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

stamp "== speed benchmark on cuda and flex"
timeout 240 cargo bench --features flex,cuda --bench speed -- --backends cuda,flex --epoch-steps 40 \
    --json "$out/speed.json" 2>&1 | tee "$out/speed.log"
bench_rc=${PIPESTATUS[0]}

echo
echo "## GPU check summary ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
echo
echo "| check | result |"
echo "|---|---|"
for t in mnist_cnn_levels_match_flex mnist_resnet_levels_match_flex mnist_cnn_training_step_matches_flex \
         mnist_resnet_training_step_matches_flex gradients_stay_inside_the_level checkpoint_round_trip; do
    if grep -q "^test cuda::$t ... ok" "$out/tests.log"; then r=pass; else r=FAIL; fi
    echo "| cuda: $t | $r |"
done
python3 - "$out/speed.json" <<'PY' || echo "| benchmark | FAILED (exit $bench_rc, see $out/speed.log) |"
import json, sys
for f in json.load(open(sys.argv[1])):
    b = f["backend"]
    if f["epoch_joint_s"] is not None:
        print(f"| {b}: epoch s, joint / full / sequential | {f['epoch_joint_s']:.2f} / {f['epoch_full_s']:.2f} / {f['epoch_sequential_s']:.2f} |")
    lat = f["latency_extracted_ms"]
    cells = " ; ".join(f"L{k} " + "/".join(f"{v:.3f}" for v in row) for k, row in enumerate(lat))
    print(f"| {b}: latency ms at batch 1/64/256 | {cells} |")
    print(f"| {b}: full / core at batch 256 | {lat[-1][-1] / lat[0][-1]:.2f}x |")
PY
stamp "done (tests exit $tests_rc, benchmark exit $bench_rc)"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
