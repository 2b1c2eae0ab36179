"""Two runs of one benchmark side by side: each numeric figure of B as a ratio of A's.

Why: the JSON that every bench script writes (``--json``, bench/jsonout.py) carries the host
fingerprint, so a comparison first says whether the two runs come from the same host and
setup, then which figures moved. With one file it prints that run's Markdown table again
(what docs/performance.md quotes), with the host and the date.

Usage: .venv/bin/python bench/compare.py [A.json] B.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Fingerprint fields worth a line when they differ.
HOST_FIELDS = ("hostname", "cpu_model", "cpu", "kernel_release", "kvm_backend", "qemu_version")


def numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a nested figures object, by its dotted path."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield prefix, float(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from numbers(sub, f"{prefix}.{key}" if prefix else str(key))


def table(doc: dict[str, Any]) -> int:
    host = doc["host"]
    print(
        f"{doc['bench']}, {doc['created']}: {host['cpu_model']} ({host['cpu']}), Linux "
        f"{host['kernel_release']}, KVM backend {host['kvm_backend']}, QEMU {host['qemu_version']}"
    )
    rows = doc.get("table") or []
    if rows:
        columns = list(rows[0])
        print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 1:
        return table(json.loads(Path(argv[0]).read_text()))
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    a, b = (json.loads(Path(p).read_text()) for p in argv)
    if a.get("bench") != b.get("bench"):
        print(f"different benchmarks: {a.get('bench')} and {b.get('bench')}", file=sys.stderr)
        return 2
    print(f"{a['bench']}: A {a['created']}, B {b['created']}")
    for key in HOST_FIELDS:
        if a["host"].get(key) != b["host"].get(key):
            print(f"  host differs: {key}: {a['host'].get(key)!r} -> {b['host'].get(key)!r}")
    fa, fb = dict(numbers(a["figures"])), dict(numbers(b["figures"]))
    print("| figure | A | B | B/A |\n|---|---:|---:|---:|")
    for name in [n for n in fa if n in fb]:
        ratio = f"{fb[name] / fa[name]:.2f}" if fa[name] else "-"
        print(f"| {name} | {fa[name]:.6g} | {fb[name]:.6g} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
