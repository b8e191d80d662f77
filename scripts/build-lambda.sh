#!/usr/bin/env bash
# Builds the Lambda functions as `sam build` does (cargo lambda, provided.al2023) and prints
# their sizes: target/lambda/<function>/bootstrap and bootstrap.zip.
# Usage: scripts/build-lambda.sh [--arm64 (default) | --x86-64]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.venv"
if ! [ -x "$venv/bin/cargo-lambda" ] || ! "$venv/bin/python" -c 'import ziglang' >/dev/null 2>&1; then
  echo "== installing cargo-lambda and ziglang into .venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'cargo-lambda>=1.8,<2' 'ziglang>=0.13'
fi
export PATH="$venv/bin:$PATH"

functions=(login qrcode token-refresher push notify)
lambda_dir="${CARGO_TARGET_DIR:-target}/lambda"
pkgs=()
for f in "${functions[@]}"; do pkgs+=(-p "$f"); done

arch=${1:---arm64}
case "$arch" in
  --arm64)
    rustup target add aarch64-unknown-linux-gnu >/dev/null
    cargo lambda build --release --arm64 "${pkgs[@]}" ;;
  --x86-64)
    cargo lambda build --release "${pkgs[@]}" ;;
  *) echo "usage: $0 [--arm64|--x86-64]" >&2; exit 2 ;;
esac

# The deployment package Lambda receives: bootstrap alone in a zip.
for f in "${functions[@]}"; do
  python3 - "$lambda_dir/$f" <<'PY'
import sys, zipfile, os
d = sys.argv[1]
with zipfile.ZipFile(os.path.join(d, "bootstrap.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(os.path.join(d, "bootstrap"), "rb") as b:
        z.writestr(info, b.read())
PY
done

printf '%-16s %12s %12s  %s\n' function bootstrap zip arch
for f in "${functions[@]}"; do
  bin="$lambda_dir/$f/bootstrap"
  zip="$lambda_dir/$f/bootstrap.zip"
  [ -f "$bin" ] || { echo "missing $bin" >&2; exit 1; }
  printf '%-16s %12s %12s  %s\n' "$f" "$(stat -c %s "$bin")" "$(stat -c %s "$zip")" "$(file -b "$bin" | cut -d, -f2 | xargs)"
done
