#!/usr/bin/env bash
# The one command that runs every test, from a fresh machine:
#   bash tests/run.sh
# It installs what the tests need and the machine lacks (node packages for the atlassian-jwt oracle,
# moto's DynamoDB/SQS/KMS server and cfn-lint in a local virtual environment, Debian's chromium and
# chromium-driver for the browser tests), starts the server on 127.0.0.1, runs the checks and every
# test, and stops the server. Any missing piece fails the run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# A CI run builds once from clean: incremental compilation only costs it time and disk (a third
# of the target directory).
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi
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

step "headless Chromium and chromedriver (Debian's chromium, chromium-driver)"
# The browser tests drive the app's pages in a real Chromium through chromedriver. Installed from
# Debian when missing (as root, or through sudo); a machine that cannot have them fails the run.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo -n)
  else
    fail "chromium and chromium-driver are not installed, and this is neither root nor has sudo: run 'apt-get install -y chromium chromium-driver' as root"
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    || fail "apt-get update failed (needed to install chromium and chromium-driver)"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
    || fail "apt-get install -y chromium chromium-driver failed: the browser tests need both"
fi
CHROMIUM="$(command -v chromium)" || fail "chromium is still not on PATH after installing it"
CHROMEDRIVER="$(command -v chromedriver)" || fail "chromedriver is still not on PATH after installing chromium-driver"
# Debian's chromium launcher prints shell noise on stderr; the version is on stdout.
chromium_version="$("$CHROMIUM" --version 2>/dev/null)" || fail "'$CHROMIUM --version' failed: Chromium does not run here"
chromedriver_version="$("$CHROMEDRIVER" --version 2>/dev/null)" || fail "'$CHROMEDRIVER --version' failed: chromedriver does not run here"
major() { [[ "$1" =~ ([0-9]+)\.[0-9]+\. ]] && printf '%s' "${BASH_REMATCH[1]}"; }
chromium_major="$(major "$chromium_version")" || fail "no version in '$chromium_version'"
chromedriver_major="$(major "$chromedriver_version")" || fail "no version in '$chromedriver_version'"
[ "$chromium_major" = "$chromedriver_major" ] \
  || fail "chromedriver ($chromedriver_version) does not match Chromium ($chromium_version): apt-get install -y chromium chromium-driver"
export CHROMIUM CHROMEDRIVER
echo "$chromium_version ($CHROMIUM); $chromedriver_version ($CHROMEDRIVER)"

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
