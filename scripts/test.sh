#!/usr/bin/env bash
# The test command: installs what the tests need (moto's server, cfn-lint and its serverless
# rules, cargo-lambda, schemathesis) into .venv, starts a moto server (DynamoDB and S3 wire protocol) for the run, lints
# the template, runs every test of the workspace and the mini-program client's tests (Node.js >= 18;
# skipped with a message without it), then drives the local server with schemathesis
# against openapi.yaml. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv cfnlint 'cfn-lint>=1.30,<2'
# AWS's serverless rules for cfn-lint (tracing, access logs, on-failure destinations, DLQs).
ensure_venv cfn_lint_serverless 'cfn-lint-serverless>=0.3,<1'
# cargo lambda watch, for the test that drives the functions through it.
if ! [ -x .venv/bin/cargo-lambda ]; then
  echo "== installing cargo-lambda into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda>=1.8,<2'
fi
echo "== cfn-lint template.yaml (with AWS's serverless rules)"
cfn-lint template.yaml
cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml

start_moto
echo "== cargo test"
# Build every binary first: the end-to-end tests run the real function binaries.
cargo build --workspace --bins
cargo test --workspace "$@"

echo "== the mini-program client: node --test client/test/ (against target/debug/local-server)"
if command -v node >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] < 18 ? 1 : 0)'; then
  node --test client/test/
else
  echo "   SKIPPED: Node.js >= 18 is not installed, so client/wxmp.js is not tested here" >&2
fi

echo "== API conformance (schemathesis on openapi.yaml against the local server)"
bash scripts/conformance.sh
