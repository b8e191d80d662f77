#!/usr/bin/env bash
# Paired timings of two builds of the functions, for the README's "one line per change" figures:
# this machine's figures move up to a quarter between runs, so two builds are compared only in
# turns on one moto: a warm process of each, blocks of 100 invocations taken in turn, each
# process's CPU summed over its own blocks (the bench's BENCH_VS mode). Usage:
#   scripts/bench-ab.sh A B        # A, B: folders under target/ holding login
# e.g. build the commit before a change, copy its target/release/login into target/before, build
# this one, then `scripts/bench-ab.sh release before`. ROUNDS (2) repeats it; it prints CPU per
# warm login and per warm GET /session for both, and A's change against B.
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
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "== round $round"
  BENCH_PROFILE="$1" BENCH_VS="$2" "$target/release/bench" | grep -E '^  CPU per'
done
