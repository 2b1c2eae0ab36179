#!/usr/bin/env bash
# Unpack QEMU from Debian sid (11.x) into a private prefix, as a second binary next to the
# system's QEMU, without touching the system: a separate apt state (own sources, lists and
# cache), `apt-get download` + `dpkg -x` of QEMU and the libraries sid's build needs newer
# than the system's, and a wrapper that runs it with sid's own dynamic loader.
#
# Usage: tools/fetch-qemu-sid.sh [PREFIX]
#   PREFIX defaults to $QMPGMEM_QEMU_SID or ${XDG_CACHE_HOME:-~/.cache}/qmpgmem/qemu-sid.
#   Prints the wrapper's path last; use it as `qmpgmem probe --qemu PREFIX/qemu-system-x86_64`
#   or QMPGMEM_EXTRA_QEMU=PREFIX/qemu-system-x86_64 for the tests. Idempotent: an existing
#   working prefix is kept (delete it to refetch; sid moves, so versions are read from the
#   binary, never assumed).
set -euo pipefail

prefix=${1:-${QMPGMEM_QEMU_SID:-${XDG_CACHE_HOME:-$HOME/.cache}/qmpgmem/qemu-sid}}
prefix=$(realpath -m "$prefix")  # apt resolves relative Dir:: options against /etc/apt
wrapper=$prefix/qemu-system-x86_64
src=/etc/apt/sources.list.d/debian.sources

# QEMU and the libraries whose sid versions it links against (checked with sid's 11.1.3;
# a new sid may want more: the check at the end names what is missing).
packages=(qemu-system-x86 qemu-system-common qemu-system-data libc6 libslirp0 libcapstone5
          libfuse3-4 libaio1t64 libnettle8t64)
# Firmware a confidential guest boots from; welcome but not required. (sid split "ovmf" into
# ovmf-generic, ovmf-amdsev and ovmf-inteltdx; older suites have it all in "ovmf".)
optional=(ovmf-generic ovmf-amdsev ovmf-inteltdx)

die() { echo "fetch-qemu-sid: $*" >&2; exit 1; }

check() {
    local out
    # "-device help" loads every module: a module of another QEMU build aborts it
    if out=$("$wrapper" --version 2>&1) && grep -q '^QEMU emulator version' <<<"$out" \
        && "$wrapper" -device help >/dev/null 2>&1; then
        echo "fetch-qemu-sid: $(head -n1 <<<"$out") at $prefix" >&2
        return 0
    fi
    echo "fetch-qemu-sid: $wrapper does not run: ${out%%$'\n'*}" >&2
    # name the libraries the loader cannot find (ld.so --list)
    "$prefix/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        --library-path "$prefix/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu" \
        --list "$prefix/usr/bin/qemu-system-x86_64" 2>&1 | grep 'not found' >&2 || true
    return 1
}

if [ -x "$wrapper" ] && check 2>/dev/null; then
    check
    echo "$wrapper"
    exit 0
fi

command -v apt-get >/dev/null || die "needs apt-get (a Debian-like host)"
command -v dpkg >/dev/null || die "needs dpkg"
[ -f "$src" ] || die "$src not found; cannot derive a sid entry from the system's sources"

state=$prefix/.apt
mkdir -p "$state/sources" "$state/lists/partial" "$state/cache/archives/partial" "$prefix/debs"

# The system's first Debian stanza (its URIs and keyring), with Suites: sid only.
awk 'BEGIN{RS=""; ORS="\n\n"} /Suites:[^\n]*bookworm/ && !done {
        n=split($0, L, "\n"); out="";
        for (i=1;i<=n;i++) { if (L[i] ~ /^Suites:/) L[i]="Suites: sid"; if (L[i] !~ /^#/) out=out L[i] "\n" }
        printf "%s", out; done=1 }' "$src" > "$state/sources/sid.sources"
grep -q '^Suites: sid$' "$state/sources/sid.sources" || die "no Debian stanza in $src"

apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$state/sources"
    -o "Dir::State::Lists=$state/lists"
    -o "Dir::Cache=$state/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)
echo "fetch-qemu-sid: updating a private apt state in $state" >&2
apt-get "${apt_opts[@]}" -qq update

cd "$prefix/debs"
rm -f ./*.deb
apt-get "${apt_opts[@]}" -qq download "${packages[@]}" || die "apt-get download failed"
for p in "${optional[@]}"; do
    apt-get "${apt_opts[@]}" -qq download "$p" 2>/dev/null \
        || echo "fetch-qemu-sid: optional package $p not available in sid; skipped" >&2
done
for deb in ./*.deb; do
    dpkg -x "$deb" "$prefix"
done

cat > "$wrapper" <<'EOF'
#!/bin/sh
# Runs the QEMU unpacked next to this script with its own loader and libraries (sid's libc
# is newer than the system's); -L points QEMU at its own BIOS and option ROMs, and
# QEMU_MODULE_DIR at its own modules (else it loads the system QEMU's and aborts).
P=$(dirname "$(readlink -f "$0")")
QEMU_MODULE_DIR="$P/usr/lib/x86_64-linux-gnu/qemu"
export QEMU_MODULE_DIR
exec "$P/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
    --library-path "$P/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu" \
    "$P/usr/bin/qemu-system-x86_64" -L "$P/usr/share/qemu" "$@"
EOF
chmod 755 "$wrapper"

check || die "the unpacked QEMU does not run; add the missing libraries' packages above"
for fd in "$prefix"/usr/share/ovmf/*.fd "$prefix"/usr/share/OVMF/*.fd; do
    if [ -f "$fd" ]; then echo "fetch-qemu-sid: firmware $fd" >&2; fi
done
echo "$wrapper"
