#!/usr/bin/env bash
# Nestify against training from scratch, and the importance re-ordering against none
# (issue "Serve any budget"): for each seed, a dense mnist-cnn trained 2 epochs is nestified
# (3 channel levels 0.25,0.5,1) and fine-tuned 1 epoch, with channels ordered by filter L1 norm,
# by batch-norm |γ|, and not re-ordered; a nested model trained 3 epochs from scratch is the
# reference. Prints one line per run: seed, variant, accuracy of every level (test set).
#
#   scripts/nestify_ablation.sh OUT_DIR [SEEDS...]     (default seeds: 42 43 44)
set -euo pipefail
out=${1:?give an output folder}
shift
seeds=${*:-42 43 44}
here=$(cd "$(dirname "$0")/.." && pwd)
data=${DATA:-$here/../shared/data/mnist10k}
bin=${NESTEDNET:-$here/target/release/nestednet}
mkdir -p "$out"
levels() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(' '.join('%.4f' % l['accuracy'] for l in r['levels']))" "$1/report.json"; }
for seed in $seeds; do
  d="$out/seed$seed"
  mkdir -p "$d"
  [ -f "$d/dense/report.json" ] || "$bin" train --data-dir "$data" --levels 1 --epochs 2 --seed "$seed" --out "$d/dense" > "$d/dense.log"
  [ -f "$d/dense.safetensors" ] || "$bin" export --run "$d/dense" --level 0 --out "$d/dense.safetensors" >> "$d/dense.log"
  for importance in filter-l1 bn-gamma none; do
    [ -f "$d/nest-$importance/report.json" ] || "$bin" nestify --from "$d/dense.safetensors" --importance "$importance" \
      --data-dir "$data" --epochs 1 --seed "$seed" --out "$d/nest-$importance" > "$d/nest-$importance.log"
  done
  [ -f "$d/scratch/report.json" ] || "$bin" train --data-dir "$data" --epochs 3 --seed "$seed" --out "$d/scratch" > "$d/scratch.log"
  echo "seed $seed dense(2 ep) $(levels "$d/dense")"
  for v in nest-filter-l1 nest-bn-gamma nest-none scratch; do
    echo "seed $seed $v $(levels "$d/$v")"
  done
done
