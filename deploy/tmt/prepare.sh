#!/usr/bin/env bash
# tmt prepare (plans/library.fmf): QEMU, gcc/binutils/make and python3 with venv when
# missing (dnf or apt), then a venv in the plan's data directory with qmpgmem installed from
# this tree. With QMPGMEM set to a qmpgmem executable, nothing is installed.
set -euo pipefail
if [ -n "${QMPGMEM:-}" ]; then
    "$QMPGMEM" --version
    exit 0
fi
root=${TMT_TREE:-$(cd "$(dirname "$0")/../.." && pwd)}
venv=${TMT_PLAN_DATA:?run by tmt}/venv
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu)
for c in gcc make ld; do command -v "$c" >/dev/null || missing+=("$c"); done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "prepare: installing what provides: ${missing[*]}"
    if command -v dnf >/dev/null; then
        dnf install -y qemu-system-x86-core gcc make binutils python3
    elif command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends qemu-system-x86 gcc make binutils python3-venv
    else
        echo "prepare: no dnf or apt-get to install ${missing[*]}" >&2
        exit 1
    fi
fi
test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$root"
"$venv/bin/qmpgmem" --version
