#!/usr/bin/env bash
# Training speed of the 3-level mnist-cnn: nestednet (flex, 2 threads) against PyTorch on the
# CPU (2 threads), same model, data and recipe (2 epochs, batch 64, Adam 1e-3), run one after the
# other in one invocation. Prints seconds per epoch of each and the ratio nestednet / PyTorch.
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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

target/release/nestednet train --data-dir "$DATA" --out "$tmp/run" --epochs "$EPOCHS" --device flex >"$tmp/burn.log" 2>&1
burn=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['train_seconds_per_epoch'])" "$tmp/run/report.json")
burn_acc=$("$PYTHON" -c "import json,sys; print([round(l['accuracy'],4) for l in json.load(open(sys.argv[1]))['levels']])" "$tmp/run/report.json")

"$PYTHON" scripts/torch_mnist_cnn.py --data-dir "$DATA" --epochs "$EPOCHS" --threads 2 >"$tmp/torch.json"
torch=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds_per_epoch'])" "$tmp/torch.json")
torch_acc=$("$PYTHON" -c "import json,sys; print([round(a,4) for a in json.load(open(sys.argv[1]))['accuracy']])" "$tmp/torch.json")

"$PYTHON" - "$burn" "$torch" "$burn_acc" "$torch_acc" <<'PY'
import sys
burn, torch = float(sys.argv[1]), float(sys.argv[2])
print(f"nestednet (flex, 2 threads): {burn:.2f} s/epoch, test accuracy per level {sys.argv[3]}")
print(f"PyTorch   (CPU, 2 threads):  {torch:.2f} s/epoch, test accuracy per level {sys.argv[4]}")
print(f"ratio nestednet / PyTorch:   {burn / torch:.2f}x")
PY
