# Shared by the scripts: the project's Python tools in .venv, and a moto server for one run.
# shellcheck shell=bash

venv="$(pwd)/.venv"

# ensure_venv PACKAGE... : installs the packages into .venv unless `import CHECK` works.
ensure_venv() {
  local check=$1; shift
  if ! "$venv/bin/python" -c "import $check" >/dev/null 2>&1; then
    echo "== installing $* into .venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
  export PATH="$venv/bin:$PATH"
}

# start_moto: a moto server (DynamoDB and S3 wire protocols) on a free port for this run;
# exports MOTO_ENDPOINT, which the tests and the benchmark use; stopped when the script exits.
start_moto() {
  ensure_venv moto 'moto[server]>=5.1,<6'
  local port log
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log=$(mktemp -t moto.XXXXXX.log)
  moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  moto_pid=$!
  trap 'kill $moto_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" >/dev/null 2>&1; then
      export MOTO_ENDPOINT="http://127.0.0.1:$port"
      echo "== moto server at $MOTO_ENDPOINT"
      return 0
    fi
    sleep 0.2
  done
  echo "moto server did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

# free_port: prints a TCP port on 127.0.0.1 that is free now (for a server started next).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
