#!/usr/bin/env bash
# Install what the fleet tier (tests_fleet/, `make fleet`) needs: Debian's openssh-server, for
# the test hosts' sshd on loopback addresses, and a private venv build/fleet-tools with
# ansible-core and tmt. Idempotent and quick when everything is present.
#
# Installing openssh-server starts no system sshd: the package's service start is refused
# through policy-rc.d for the length of the install (the tests start their own sshd, on
# 127.0.0.2 and 127.0.0.3, and stop them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLEET_TOOLS_VENV:-build/fleet-tools}
PYTHON=${PYTHON:-python3}
# what the tier is tested with; a newer ansible-core or tmt needs a look at tests_fleet first
ANSIBLE_CORE='ansible-core>=2.15,<2.18'
TMT='tmt>=1.30'

if ! command -v /usr/sbin/sshd >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fleet setup: /usr/sbin/sshd is missing and installing openssh-server needs root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap '[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends openssh-server >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
    }
    echo "fleet setup: installed $(/usr/sbin/sshd -V 2>&1 | head -1)"
fi

versions() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("ansible-core", "tmt")))'
}
stamp=$VENV/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt "$0" ] && [ -x "$VENV/bin/ansible-playbook" ] \
        && [ -x "$VENV/bin/tmt" ]; then
    echo "fleet setup: $(versions) present in $VENV"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$ANSIBLE_CORE" "$TMT"
touch "$stamp"
echo "fleet setup: installed $(versions) in $VENV"
