#!/usr/bin/env bash
# Paired timings of two builds of the functions, for the README's "one line per change" figures:
# this machine's figures move up to a quarter between runs, so two builds are compared only in
# alternating rounds on one moto. Usage:
#   scripts/bench-ab.sh A B        # A, B: folders under target/ holding login, qrcode, token-refresher
# e.g. build the commit before a change, copy its target/release/{login,qrcode,token-refresher}
# into target/before, build this one, then `scripts/bench-ab.sh before release`. ROUNDS (3) and
# BENCH_ONLY ("login,GET /session,code hit") change what is run; runs are quick (BENCH_QUICK).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
[ $# -eq 2 ] || { echo "usage: scripts/bench-ab.sh A B (folders under target/)" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-target}"
for d in "$1" "$2"; do
  [ -x "$target/$d/login" ] || { echo "$target/$d/login is missing" >&2; exit 2; }
done
ensure_venv awslambdaric -r bench/python-login/requirements.txt
start_moto
cargo build --release -p e2e --bin bench
export BENCH_QUICK=1 BENCH_ONLY="${BENCH_ONLY:-login,GET /session,code hit}"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for build in "$1" "$2"; do
    echo "== round $round: $build"
    # The bench measures the binaries of target/<BENCH_PROFILE>/.
    BENCH_PROFILE="$build" "$target/release/bench" | grep -E '^  (login|qrcode|push|python|echo)[^=]* ms'
  done
done
