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
# Two builds, so that the functions are built alone, exactly as deployed (one build would unify
# the bench's features, such as wxmp's call counters, into them).
# BENCH_PROFILE=profiling measures the same build with symbols; BENCH_PERF=<scenario> (one of
# login, "login secret", "GET /session", "metrics off", "code miss", "code hit", "code hit s3", push, "python login", echo) records that scenario's
# warm run with `perf record` into target/perf-<scenario>.data (its CPU figure then includes
# perf's overhead). BENCH_ONLY=<scenario>[,...] runs only those. BENCH_VS=<dir> runs only this
# build's login against target/<dir>/login, in turns (scripts/bench-ab.sh). BENCH_STORE_RTT_MS=<ms> adds a
# network round trip to every AWS call (moto on loopback has none; within a region DynamoDB's
# calls take a few ms), and two to the first call on a new connection (its TCP and TLS
# handshakes). BENCH_WECHAT_MS=<ms> delays every WeChat answer (from a Lambda region WeChat
# answers in tens of ms).
profile="${BENCH_PROFILE:-release}"
echo "== cargo build --profile $profile (the functions)"
cargo build --profile "$profile" -p login -p qrcode -p token-refresher -p push
echo "== cargo build --profile $profile (the echo floor and the bench)"
cargo build --profile "$profile" -p e2e --bin echo-floor --bin bench
"${CARGO_TARGET_DIR:-target}/$profile/bench"
