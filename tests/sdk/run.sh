#!/usr/bin/env bash
# Runs Hubbub's official-SDK compatibility suites (JavaScript and Python).
#
#   HUBBUB_BIN=path/to/hubbub tests/sdk/run.sh
#
# HUBBUB_BIN defaults to <repo root>/target/debug/hubbub. Needs node (>= 20) with npm,
# and python3 (>= 3.9) with the venv module; packages come from the npm registry and PyPI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"

HUBBUB_BIN="${HUBBUB_BIN:-$repo_root/target/debug/hubbub}"
case "$HUBBUB_BIN" in
  /*) ;;
  *) HUBBUB_BIN="$(pwd)/$HUBBUB_BIN" ;;
esac
export HUBBUB_BIN
if [[ ! -x "$HUBBUB_BIN" ]]; then
  echo "run.sh: hubbub binary not found or not executable: $HUBBUB_BIN (build it or set HUBBUB_BIN)" >&2
  exit 2
fi
# The CLI must find the admin token through --data-dir, never through an outer variable.
unset HUBBUB_ADMIN_TOKEN

echo "== SDK suite against $HUBBUB_BIN"

# The portal tests drive Debian's Chromium with Playwright (playwright-core downloads no browser).
if [[ -z "${CHROMIUM_PATH:-}" && ! -x /usr/bin/chromium ]]; then
  echo "== installing chromium (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

echo "== installing JavaScript SDKs (npm ci)"
(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)

echo "== installing Python SDKs (.venv)"
venv="$here/python/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  python3 -m venv --clear "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/python/requirements.txt" -c "$here/python/constraints.txt"

status=0

echo "== JavaScript: node --test"
node_test=(node --test --test-concurrency=1)
# A test file whose clients are still retrying must not keep the runner waiting after its tests ended.
if node --help 2>/dev/null | grep -q -- '--test-force-exit'; then
  node_test+=(--test-force-exit)
fi
(cd "$here/node" && timeout 900 "${node_test[@]}" ./*.test.mjs) || status=1

echo "== Python: pytest"
(cd "$here/python" && timeout 900 "$venv/bin/python" -m pytest -q) || status=1

if [[ $status -ne 0 ]]; then
  echo "== SDK suite FAILED" >&2
else
  echo "== SDK suite passed"
fi
exit $status
