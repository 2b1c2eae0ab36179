#!/usr/bin/env bash
# Install QEMU (system, x86) from Debian bookworm-backports when no QEMU >= 9.1 is present,
# plus the guest image toolchain. Idempotent. Only the backports suite is added: testing or
# unstable in the default priority list would silently upgrade libc.
set -euo pipefail

want_major=9; want_minor=1
have_qemu() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    local v; v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
    set -- $v
    [ "${1:-0}" -gt "$want_major" ] || { [ "${1:-0}" -eq "$want_major" ] && [ "${2:-0}" -ge "$want_minor" ]; }
}
have_tools() { command -v gcc >/dev/null && command -v ld >/dev/null && command -v objcopy >/dev/null && command -v make >/dev/null && command -v cpio >/dev/null; }

if have_qemu && have_tools; then
    echo "setup: $(qemu-system-x86_64 --version | head -n1) and the guest toolchain are present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: QEMU >= ${want_major}.${want_minor} is missing and installing it needs root (apt-get)" >&2
    exit 1
fi

src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/qmpgmem-bookworm-backports.sources
if [ ! -f "$bp" ]; then
    [ -f "$src" ] || { echo "setup: $src not found; cannot derive a bookworm-backports entry" >&2; exit 1; }
    # Take the first stanza whose Suites mention bookworm and swap its suites for backports only.
    awk 'BEGIN{RS=""; ORS="\n\n"} /Suites:[^\n]*bookworm/ && !done {
            n=split($0, L, "\n"); out="";
            for (i=1;i<=n;i++) { if (L[i] ~ /^Suites:/) L[i]="Suites: bookworm-backports"; if (L[i] !~ /^#/) out=out L[i] "\n" }
            printf "%s", out; done=1 }' "$src" > "$bp.tmp"
    grep -q '^Suites: bookworm-backports$' "$bp.tmp" || { rm -f "$bp.tmp"; echo "setup: no bookworm stanza in $src" >&2; exit 1; }
    mv "$bp.tmp" "$bp"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
apt-get install -y -qq --no-install-recommends gcc binutils make ovmf cpio >/dev/null
echo "setup: installed $(qemu-system-x86_64 --version | head -n1)"
