#!/usr/bin/env bash
set -euo pipefail
. "$(dirname "$0")/common.sh"
"$qmpgmem" probe --json "${qemu_args[@]}" > "$out/probe.json"
"$qmpgmem" probe "${qemu_args[@]}"
