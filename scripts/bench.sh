#!/usr/bin/env bash
# The benchmark: builds the release binaries (the Lambda profile), installs the Python peer's
# runtime (boto3, awslambdaric) into .venv, starts a moto server, and prints every figure beside
# its target, with the Python peer and an echo floor measured in the same run.
# BENCH_QUICK=1 for a short smoke run. Sizes of the arm64 cargo-lambda build (what is deployed)
# are judged when scripts/build-lambda.sh --arm64 has been run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv awslambdaric -r bench/python-login/requirements.txt
ensure_venv boto3 -r bench/python-login/requirements.txt
start_moto
echo "== cargo build --release (functions, the echo floor and the bench)"
cargo build --release -p login -p qrcode -p token-refresher -p e2e \
  --bin login --bin qrcode --bin token-refresher --bin echo-floor --bin bench
"${CARGO_TARGET_DIR:-target}/release/bench"
