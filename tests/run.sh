#!/usr/bin/env bash
# The one command that runs every test, from a fresh machine:
#   bash tests/run.sh
# It installs what the tests need and the machine lacks (node packages for the atlassian-jwt oracle,
# moto's DynamoDB/SQS/KMS server and cfn-lint in a local virtual environment), starts the server on
# 127.0.0.1, runs the checks and every test, and stops the server. Any missing piece fails the run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || fail "cargo is not installed"
command -v node >/dev/null || fail "node is not installed (the atlassian-jwt oracle needs it)"
command -v npm >/dev/null || fail "npm is not installed"
command -v python3 >/dev/null || fail "python3 is not installed (moto and cfn-lint need it)"

step "node packages for the interop oracle (npm ci)"
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed in tests/interop"

step "python tools in .venv (moto server, cfn-lint)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || fail "could not create .venv"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
  || fail "pip install -r tests/requirements.txt failed"

step "moto server on 127.0.0.1"
port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
moto_log="$(mktemp)"
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$moto_log"' EXIT
ready() { .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
  "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; }
for _ in $(seq 1 150); do
  ready && break
  kill -0 "$moto_pid" 2>/dev/null || { cat "$moto_log" >&2; fail "moto server exited"; }
  sleep 0.2
done
ready || { cat "$moto_log" >&2; fail "moto server did not start on port $port"; }
export UNDERSTUDY_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
# Nothing in a test run may reach AWS: static credentials, a fixed region, the local endpoint.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
echo "moto on $UNDERSTUDY_TEST_AWS_ENDPOINT"

step "format and lints"
cargo fmt --all --check || fail "cargo fmt --check found unformatted code (run cargo fmt --all)"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [ -f template.yaml ]; then
  step "template.yaml (cfn-lint)"
  .venv/bin/cfn-lint template.yaml
fi

step "every test"
cargo test --workspace --locked --no-fail-fast
