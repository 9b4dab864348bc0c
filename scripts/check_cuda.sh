#!/usr/bin/env bash
# Type-checks the `cuda` feature (what CI runs when its inputs changed: see
# scripts/cuda_inputs.py) and, when it passes, records the inputs' hash in .ci/cuda-checked, so
# that CI skips the check until they change again. About 10 minutes on 2 cores, in a target
# folder of its own (the feature set recompiles Burn).
#
# DOCS_RS=1 makes the two build scripts that would fetch or compile against the prebuilt LLVM
# (tracel-llvm-bundler's and cubecl-llvm's) return at once; every crate's Rust code is still
# type-checked, burn-cuda and cubecl-cuda included.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda-check}" DOCS_RS=1 \
    cargo check -p nestednet-train --lib --features cuda
python3 scripts/cuda_inputs.py --record "${1:-scripts/check_cuda.sh at $(git rev-parse --short HEAD) on $(date -u +%F)}"
