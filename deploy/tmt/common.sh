# Sourced by the tmt tests: the tree, qmpgmem from prepare.sh, caches in the plan's data.
root=${TMT_TREE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
qmpgmem=${QMPGMEM:-${TMT_PLAN_DATA:?run by tmt, or set QMPGMEM}/venv/bin/qmpgmem}
# builds of the micro guest and the hash helper stay in the plan's data directory
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-${TMT_PLAN_DATA:-$HOME}/cache}
out=${TMT_TEST_DATA:-$PWD}
qemu_args=()
for q in ${QMPGMEM_QEMU:-}; do qemu_args+=(--qemu "$q"); done
