#!/usr/bin/env bash
# Measures the release-profile choices of Cargo.toml: builds the login binary (host target) with
# one setting changed at a time, and prints its size. Slow: each variant rebuilds every crate
# (about 5 minutes each on 2 cores); it uses its own target dir, target/profile-sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
dir="${CARGO_TARGET_DIR:-target}/profile-sizes"
printf '%-16s %12s  %s\n' variant bytes "changed from the release profile"
variant() {
  local name=$1; shift
  local args=()
  for kv in "$@"; do args+=(--config "profile.release.$kv"); done
  if CARGO_TARGET_DIR="$dir" cargo build --quiet --release -p login "${args[@]}"; then
    printf '%-16s %12s  %s\n' "$name" "$(stat -c %s "$dir/release/login")" "$*"
  else
    printf '%-16s %12s  %s\n' "$name" failed "$*"
  fi
}
variant ours
variant no-strip strip=false
variant panic-unwind 'panic="unwind"'
variant opt-level-3 opt-level=3
variant no-lto lto=false
variant cgu-16 codegen-units=16
variant cargo-default opt-level=3 lto=false codegen-units=16 'panic="unwind"' strip=false
