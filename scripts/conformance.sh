#!/usr/bin/env bash
# API conformance: runs schemathesis (every check) against the local server with openapi.yaml,
# logged in through the server's built-in WeChat sandbox. Exits non-zero on any failure.
#
# Usage: scripts/conformance.sh [extra `st run` options, e.g. --seed 1 or --max-examples 200]
# Env: EXAMPLES (default 40) test cases per operation and phase.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv schemathesis 'schemathesis>=4.32,<5'
echo "== schemathesis $(python -c 'import importlib.metadata as m; print(m.version("schemathesis"))')"

echo "== cargo build -p local-server"
cargo build -p local-server

port=$(free_port)
base="http://127.0.0.1:$port"
work=$(mktemp -d -t conformance.XXXXXX)
# The sandbox and the embedded store whatever the caller's environment says: made-up login
# and phone codes are what the fuzzer sends.
env -u WECHAT_APPID -u WECHAT_SECRET -u WECHAT_API_BASE -u TABLE_NAME -u CODE_BUCKET \
  PORT="$port" RUST_LOG=warn target/debug/local-server >"$work/server.log" 2>&1 &
server_pid=$!
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop_server EXIT

# Up once it answers anything (GET /session without a token is 401).
up=""
for _ in $(seq 1 100); do
  if python - "$base" <<'EOF' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/session", timeout=2)
except urllib.error.HTTPError:
    pass
EOF
  then
    up=1
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "local-server did not start; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "== local-server at $base"

# A session through the sandbox, which accepts any made-up login code once.
token=$(python - "$base" <<'EOF'
import json, sys, time, urllib.request
req = urllib.request.Request(
    sys.argv[1] + "/login",
    data=json.dumps({"code": f"conformance.{time.time_ns()}"}).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.load(r)["token"])
EOF
)
echo "== logged in (the run logs out through DELETE /session; later calls then get 401)"

cmd=(st run openapi.yaml
  --url "$base"
  --checks all
  --header "Authorization: Bearer $token"
  --max-examples "${EXAMPLES:-40}"
  --workers 2
  --generation-database none
  "$@")
echo "== ${cmd[*]/$token/<token>}"
status=0
"${cmd[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== conformance FAILED (schemathesis exit $status); the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
