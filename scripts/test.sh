#!/usr/bin/env bash
# The test command: installs what the tests need (moto's server, cfn-lint) into .venv, starts a
# moto server (DynamoDB and S3 wire protocol) for the run, then runs every test of the workspace.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv="$root/.venv"

if ! "$venv/bin/python" -c 'import moto, cfnlint' >/dev/null 2>&1; then
  echo "== installing moto[server] and cfn-lint into .venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' 'cfn-lint>=1.30,<2'
fi
export PATH="$venv/bin:$PATH"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
export MOTO_ENDPOINT="http://127.0.0.1:$port"
echo "== moto server at $MOTO_ENDPOINT"

if [ -f template.yaml ]; then
  echo "== cfn-lint template.yaml"
  cfn-lint template.yaml
fi

echo "== cargo test"
# Build every binary first: the end-to-end tests run the real function binaries.
cargo build --workspace --bins
cargo test --workspace "$@"
