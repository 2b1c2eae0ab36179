#!/usr/bin/env bash
set -euo pipefail
. "$(dirname "$0")/common.sh"
skips=$root/deploy/classes/${QMPGMEM_HOST_CLASS:?the plan sets the host class}.yaml
args=()
for e in ${QMPGMEM_ENGINES:-qemu}; do args+=(--engine "$e"); done
if [ -n "${QMPGMEM_SELECT:-}" ]; then args+=(-m "$QMPGMEM_SELECT"); fi
cd "$out"  # no scenarios/ here: the library installed with qmpgmem
exec "$qmpgmem" run "${args[@]}" "${qemu_args[@]}" --strict --expect-skips "$skips" \
    --json run.json --junit run.xml --artifacts qmpgmem-artifacts
