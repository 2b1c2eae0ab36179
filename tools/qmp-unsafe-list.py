#!/usr/bin/env python3
"""Print the QMP commands of a QEMU binary that reach the host (docs/security.md).

    .venv/bin/python tools/qmp-unsafe-list.py [BIN]

The list is the binary's own query-qmp-schema walked by the rule of qmpgmem/host/qmp_policy.py;
docs/security.md quotes it for the QEMU versions it was written against.
"""

from __future__ import annotations

import asyncio
import sys

from qmpgmem.host.qemu import DEFAULT_QEMU, probe_qemu
from qmpgmem.host.qmp_policy import markdown_list


def main(argv: list[str]) -> int:
    facts = asyncio.run(probe_qemu(argv[0] if argv else DEFAULT_QEMU))
    policy = facts.qmp_policy()
    if policy is None:
        print(f"{facts.binary}: the probe kept no query-qmp-schema", file=sys.stderr)
        return 1
    unsafe = policy.unsafe_commands()
    print(f"QEMU {facts.version_str} ({facts.binary}): {len(unsafe)} of {len(policy.commands)}")
    print("commands reach the host\n")
    print(markdown_list(policy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
