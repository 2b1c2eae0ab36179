#!/usr/bin/env bash
# Install Debian's chromium (from the suites already configured: bookworm here) for the test
# that opens `qmpgmem aggregate --html` in a real headless browser. Idempotent; optional: the
# test skips with the reason when no chromium is found, except under CI (CI=true), where a
# missing browser fails it, so this script must have run (`make test` runs it).
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    echo "setup: $(chromium --version 2>/dev/null || chromium-browser --version) is present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: chromium is missing and installing it needs root (apt-get install chromium);" \
         "the HTML report's browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
echo "setup: installed $(chromium --version)"
