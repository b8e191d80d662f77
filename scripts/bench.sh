#!/usr/bin/env bash
# The benchmark: builds the release binaries (the Lambda profile) and prints every figure beside
# its target. BENCH_QUICK=1 for a short smoke run. Sizes of the cargo-lambda (arm64) build are
# included when scripts/build-lambda.sh has been run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

start_moto
echo "== cargo build --release (functions and the bench)"
cargo build --release -p login -p qrcode -p token-refresher -p e2e --bin login --bin qrcode --bin token-refresher --bin bench
"${CARGO_TARGET_DIR:-target}/release/bench"
