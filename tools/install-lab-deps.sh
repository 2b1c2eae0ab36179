#!/usr/bin/env bash
# Install what building the lab kernel and its KVM selftests needs (Debian packages), when
# missing. Idempotent; the kernel source itself is fetched by `qmpgmem lab kernel` into the
# user cache through a private apt state, never installed.
set -euo pipefail
packages=(bc flex bison libelf-dev libssl-dev libnuma-dev rsync xz-utils cpio make gcc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "lab setup: build packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "lab setup: needs root to install: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "lab setup: installed ${missing[*]}"
