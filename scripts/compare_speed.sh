#!/usr/bin/env bash
# nestednet (flex, 2 threads) against PyTorch on the CPU (2 threads), the same 3-level mnist-cnn,
# data and recipe (batch 64, Adam 1e-3), run one after the other in one invocation:
#
# 1. training: `nestednet train` and the PyTorch script, EPOCHS epochs each, seconds per epoch
#    and test accuracy per level, and their ratio (the target: nestednet <= 1.0x, 0.5x the stretch);
# 2. the nesting figures, measured the same way in both frameworks: a joint 3-level epoch
#    against the plain full-width network's epoch and against the three widths trained one
#    after another, and the full level's inference latency over the core's at batch 1 and 256
#    (compact copies of each level's weights). nestednet's come from `cargo bench --bench speed`.
#
#   python3 -m venv .venv && .venv/bin/pip install torch==2.9.0 numpy
#   PYTHON=.venv/bin/python scripts/compare_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-2}
DATA=${DATA:-data/mnist10k}
export RAYON_NUM_THREADS=2

cargo build --release -q -p nestednet-cli
cargo bench --no-run -q --bench speed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs a command with its output in a log, and shows the log if it fails.
logged() { local log=$1; shift; "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "failed: $*" >&2; exit 1; }; }
json() { "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# The `plain` recipe (Adam 1e-3, constant rate, batch 64): the PyTorch script's settings.
logged "$tmp/burn.log" target/release/nestednet train --data-dir "$DATA" --out "$tmp/run" --epochs "$EPOCHS" \
    --recipe plain --device flex
burn=$(json "$tmp/run/report.json" "d['train_seconds_per_epoch']")
burn_acc=$(json "$tmp/run/report.json" "[round(l['accuracy'],4) for l in d['levels']]")
logged "$tmp/bench.log" cargo bench -q --bench speed -- --backends flex --batches 1,256 --json "$tmp/bench.json"

torch_run() { "$PYTHON" scripts/torch_mnist_cnn.py --data-dir "$DATA" --threads 2 "$@"; }
torch_run --epochs "$EPOCHS" --latency >"$tmp/torch.json"
torch_run --epochs "$EPOCHS" --ratios 1.0 >"$tmp/torch_full.json"
torch_run --epochs "$EPOCHS" --ratios 1.0 --width 0.5 >"$tmp/torch_half.json"
torch_run --epochs "$EPOCHS" --ratios 1.0 --width 0.25 >"$tmp/torch_quarter.json"

"$PYTHON" - "$burn" "$burn_acc" "$tmp" <<'PY'
import json, sys
burn, burn_acc, tmp = float(sys.argv[1]), sys.argv[2], sys.argv[3]
load = lambda name: json.load(open(f"{tmp}/{name}"))
torch, bench = load("torch.json"), load("bench.json")[0]
acc = [round(a, 4) for a in torch["accuracy"]]
print(f"nestednet (flex, 2 threads): {burn:.2f} s/epoch, test accuracy per level {burn_acc}")
print(f"PyTorch   (CPU, 2 threads):  {torch['seconds_per_epoch']:.2f} s/epoch, test accuracy per level {acc}")
print(f"ratio nestednet / PyTorch:   {burn / torch['seconds_per_epoch']:.2f}x   (target <= 1.0x; 0.5x the stretch)")

t_joint = torch["seconds_per_epoch"]
t_full = load("torch_full.json")["seconds_per_epoch"]
t_seq = t_full + load("torch_half.json")["seconds_per_epoch"] + load("torch_quarter.json")["seconds_per_epoch"]
lat_t = torch["latency_ms"]  # [level][batch 1, 64, 256]
lat_b = bench["latency_extracted_ms"]  # [level][batch 1, 256]
rows = [
    ("joint 3-level epoch / full-width epoch", bench["epoch_joint_s"] / bench["epoch_full_s"], t_joint / t_full, "<= 1.5x"),
    ("joint epoch / 3 widths one after another", bench["epoch_joint_s"] / bench["epoch_sequential_s"], t_joint / t_seq, "-"),
    ("batch 1: full latency / core latency", lat_b[-1][0] / lat_b[0][0], lat_t[-1][0] / lat_t[0][0], ">= 3x"),
    ("batch 256: full latency / core latency", lat_b[-1][1] / lat_b[0][1], lat_t[-1][2] / lat_t[0][2], ">= 8x"),
]
print()
print("| figure | nestednet (flex) | PyTorch 2.9.0 | target |")
print("|---|---|---|---|")
for name, b, t, target in rows:
    print(f"| {name} | {b:.2f}x | {t:.2f}x | {target} |")
print()
print("| level | nestednet b1 / b256 ms | PyTorch b1 / b256 ms |")
print("|---|---|---|")
for k in range(len(lat_t)):
    print(f"| {k} | {lat_b[k][0]:.3f} / {lat_b[k][1]:.2f} | {lat_t[k][0]:.3f} / {lat_t[k][2]:.2f} |")
print(f"\nepochs (s): nestednet joint {bench['epoch_joint_s']:.2f}, full {bench['epoch_full_s']:.2f}, "
      f"sequential {bench['epoch_sequential_s']:.2f}; PyTorch joint {t_joint:.2f}, full {t_full:.2f}, sequential {t_seq:.2f}")
PY
