#!/usr/bin/env bash
# Scores candidate training recipes on a validation split of the training set, never on the test
# set: each candidate trains on the first 7/8 of data/mnist10k's training images and is scored on
# the last 1/8 (`nestednet train --validation-split 0.125`). The defaults in the model registry
# (`Recipe`s in crates/nestednet-models) were chosen from its table; docs/RECIPES.md has the
# table and the rule.
#
#   scripts/choose_recipes.sh [CANDIDATES] [OUT]
#
# CANDIDATES: one per line, `NAME | model, task and level flags | recipe flags` (default
# scripts/recipes/candidates.txt); OUT: the run folders (default runs/recipes). Finished
# candidates are kept, so an interrupted sweep continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
candidates=${1:-scripts/recipes/candidates.txt}
out=${2:-runs/recipes}
split=${VALIDATION_SPLIT:-0.125}
cargo build --release -p nestednet-cli
bin=target/release/nestednet
mkdir -p "$out"
printf '| candidate | seconds | validation accuracy per level (core → full) | mean | best − full |\n|---|---|---|---|---|\n'
grep -v '^#' "$candidates" | while IFS='|' read -r name task recipe; do
    [ -z "$name" ] && continue
    if [ ! -f "$out/$name/report.json" ]; then
        rm -rf "${out:?}/$name"
        start=$(date +%s)
        # shellcheck disable=SC2086 # the flags are meant to split
        if ! "$bin" train $task $recipe --validation-split "$split" --data-dir data/mnist10k \
            --out "$out/$name" >"$out/$name.log" 2>&1; then
            echo "| $name | failed: see $out/$name.log | | | |"
            continue
        fi
        echo $(($(date +%s) - start)) >"$out/$name.seconds"
    fi
    python3 - "$out" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
acc = [l["accuracy"] for l in json.load(open(f"{out}/{name}/report.json"))["levels"]]
secs = open(f"{out}/{name}.seconds").read().strip()
print(f"| {name} | {secs} | {' / '.join(f'{a:.4f}' for a in acc)} | {sum(acc) / len(acc):.4f} | {max(acc) - acc[-1]:.4f} |")
PY
done
