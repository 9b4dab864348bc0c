#!/usr/bin/env bash
# GPU check for the sessions that are lent a machine with NVIDIA GPUs (budget: under 10 min).
#
#   scripts/gpu_check.sh            # build with `cuda`, run the shared backend tests on cuda
#                                   # (flex as the reference), the speed benchmark, then
#                                   # data-parallel training on every GPU (--devices), and
#                                   # --ddp when there are two or more
#
# Prints one summary table at the end. Needs a CUDA driver, and the prebuilt LLVM that
# cubecl-cuda's build (cubecl-cuda -> cubecl-llvm -> tracel-llvm-bundler 23.1.0-4) fetches
# from github.com/tracel-ai/tracel-llvm. Offline, exactly one of these lets the build work
# (paths for Linux x86-64; ~ is the building user's home):
#   1. the installed bundle: the folder ~/.local/share/tracel/tracel-llvm-23.1.0-4/ (or
#      $XDG_DATA_HOME/tracel/...) holding the file `.tracel-llvm-installed`: when that marker
#      exists the bundler's build script returns at once and nothing is downloaded. Copy the
#      whole folder from a machine that built once.
#   2. the cached archive and its checksum sidecar, ~/.cache/tracel/
#      tracel-llvm-23.1.0-4-linux-x64.tar.xz and tracel-llvm-23.1.0-4-linux-x64.checksums.json,
#      with TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD=1 in the environment: the build script
#      then reads the sidecar from the cache instead of downloading it, checks the archive's
#      SHA-256 against it (a mismatch downloads again), unpacks it into the folder of 1 and
#      writes the marker.
# `DOCS_RS=1` also silences the bundler, but then nothing links: it is only good for the
# type-check CI runs (`cargo check --features cuda`, see .ci/run), not for this script.
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
llvm_home=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
if [ -e "$llvm_home/.tracel-llvm-installed" ]; then
    echo "LLVM bundle installed: $llvm_home (nothing to download)"
elif [ -n "${TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD:-}" ] \
        && [ -f ~/.cache/tracel/tracel-llvm-23.1.0-4-linux-x64.tar.xz ] \
        && [ -f ~/.cache/tracel/tracel-llvm-23.1.0-4-linux-x64.checksums.json ]; then
    echo "LLVM bundle: the cached archive in ~/.cache/tracel (checksum download skipped)"
else
    echo "note: no installed LLVM bundle ($llvm_home/.tracel-llvm-installed) and no cached archive"
    echo "      with TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD: the cuda build will try to download it"
fi
gpus=$(nvidia-smi -L | grep -c '^GPU ')

stamp "== build (release, features flex + cuda)"
if ! cargo test --release --features flex,cuda --test backends --no-run >"$out/build.log" 2>&1; then
    tail -40 "$out/build.log"
    echo "!!! gpu_check: the cuda build FAILED (log: $out/build.log). If the log mentions" >&2
    echo "!!! tracel-llvm, the prebuilt LLVM could not be downloaded: see the header of this script." >&2
    exit 1
fi
cargo bench --features flex,cuda --bench speed --no-run >>"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
cargo build --release -p nestednet-cli --features cuda >>"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
stamp "built"

stamp "== shared backend tests on cuda (flex is the reference)"
timeout 240 cargo test --release --features flex,cuda --test backends -- --include-ignored --show-output \
    2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

stamp "== speed benchmark on cuda and flex"
timeout 240 cargo bench --features flex,cuda --bench speed -- --backends cuda,flex --epoch-steps 40 \
    --json "$out/speed.json" 2>&1 | tee "$out/speed.log"
bench_rc=${PIPESTATUS[0]}

# Data-parallel training: one epoch of mnist-cnn (3 levels, 8,000 digits) on GPU 0 alone, then
# on every GPU (gather and sum), then with Burn's DDP all-reduce when there are two or more.
all=$(seq -s, -f 'cuda:%g' 0 $(( gpus - 1 )))
train_epoch() {  # name, extra flags...: prints the epoch's seconds, or FAILED
    local name=$1; shift
    rm -rf "$out/run-$name"
    if timeout 150 target/release/nestednet train --data-dir data/mnist10k --model mnist-cnn --epochs 1 \
        --out "$out/run-$name" "$@" >"$out/train-$name.log" 2>&1; then
        sed -n 's/^epoch 1 (\([0-9.]*\) s).*/\1/p' "$out/train-$name.log" | head -1
    else
        echo FAILED
    fi
}
stamp "== data-parallel training: 1 GPU, then $gpus ($all)"
one_s=$(train_epoch one --devices cuda:0)
all_s=$(train_epoch all --devices "$all")
ddp_s="not run (one GPU)"
if [ "$gpus" -ge 2 ]; then ddp_s=$(train_epoch ddp --devices "$all" --ddp); fi

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
throughput() { python3 -c "import sys; s=sys.argv[1]; print(f'{8000/float(s):.0f} images/s ({s} s)' if s.replace('.','',1).isdigit() else s)" "$1"; }
echo "| train --devices cuda:0, one epoch | $(throughput "$one_s") |"
echo "| train --devices $all ($gpus GPUs) | $(throughput "$all_s") |"
echo "| train --devices $all --ddp | $(throughput "$ddp_s") |"
stamp "done (tests exit $tests_rc, benchmark exit $bench_rc)"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$one_s" != FAILED ] && [ "$all_s" != FAILED ] && [ "$ddp_s" != FAILED ]
