"""The aggregate as KCIDB I/O data (schema v5.0), for KernelCI's common results database.

Why this mapping: KCIDB links a test to a build and a build to a checkout of source. What a
platform team qualifies is a host image, so:

- a **checkout** per kernel release the hosts ran (``origin:linux-6.18.44``): the kernel under
  test; qmpgmem does not know its git commit, so only ``comment`` and ``misc`` say which;
- a **build** per host image — kernel release, QEMU binaries (version, build, package) and
  firmware packages — shared by every host that runs the same image (``status: PASS``: it
  booted and ran);
- a **test** per aggregate cell (scenario x engine x binary on one host, or a kernel-contract
  check), with ``path`` ``qmpgmem.<engine>.<scenario>`` (a second QEMU binary adds
  ``-qemu1`` to the engine), ``environment`` naming the host, its class and fingerprint.

Statuses: passed → PASS, failed → FAIL, error and timeout → ERROR (the test did not
complete, the code's status is unknown), flaky (``run --repeat``: the runs ended differently)
→ FAIL with ``misc.qmpgmem_status: flaky``, skipped and would-skip → SKIP, a kernel-contract
deviation → DONE (ran, gives no verdict on the code), a row the host never reached because
its run was interrupted → MISS. ``would-run`` (a plan) ran nothing and is left out.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from qmpgmem.report.aggregate import Aggregate, AggregateHost, AggregateRow
from qmpgmem.report.result import HostInfo

__all__ = ["KCIDB_VERSION", "ORIGIN_PATTERN", "STATUS", "kcidb_data"]

KCIDB_VERSION: Final = {"major": 5, "minor": 0}
ORIGIN_PATTERN: Final = re.compile(r"^[a-z0-9_]+$")
STATUS: Final = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "timeout": "ERROR",
    "flaky": "FAIL",
    "skipped": "SKIP",
    "would-skip": "SKIP",
    "deviation": "DONE",
    "miss": "MISS",
}
#: KCIDB's limit on log_excerpt
_EXCERPT_MAX: Final = 16384


def _segment(text: str) -> str:
    """A KCIDB path segment: letters, digits, '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def _path(row: AggregateRow) -> str:
    engine = row.engine
    if row.binary and row.binary != "qemu[0]":
        engine += "-" + row.binary.replace("[", "").replace("]", "")
    names = row.scenario.split(".") if row.engine == "kernel-contract" else [row.scenario]
    return ".".join(_segment(s) for s in ["qmpgmem", engine, *names])


def _image(host: HostInfo) -> dict[str, Any]:
    return {
        "kernel_release": host.kernel_release,
        "qemu": [q.model_dump(exclude={"path"}) for q in host.qemu],
        "firmware": sorted(
            {(f.name, f.package or "", f.package_version or "") for f in host.firmware}
        ),
    }


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _no_nulls(value: Any) -> Any:
    """KCIDB allows no nulls: drop them from dicts and lists, recursively."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value if v is not None]
    return value


def _environment(host: AggregateHost) -> dict[str, Any]:
    return {
        "comment": f"{host.id} ({host.host_class})",
        "misc": _no_nulls(
            {
                "host_id": host.id,
                "host_class": host.host_class,
                "class_source": host.class_source,
                "fingerprint": host.fingerprint.model_dump(mode="json"),
            }
        ),
    }


def kcidb_data(agg: Aggregate, origin: str = "qmpgmem") -> dict[str, Any]:
    """KCIDB I/O data (v5.0) for ``agg``: checkouts, builds and tests.

    :raise ValueError: ``origin`` is not a KCIDB origin (lowercase letters, digits, '_')
    """
    if not ORIGIN_PATTERN.match(origin):
        raise ValueError(f"KCIDB origin {origin!r} must be lowercase letters, digits or '_'")
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: list[dict[str, Any]] = []
    for host in agg.hosts:
        fp = host.fingerprint
        checkout_id = f"{origin}:linux-{fp.kernel_release or 'unknown'}"
        checkouts.setdefault(
            checkout_id,
            {
                "id": checkout_id,
                "origin": origin,
                "comment": f"Linux {fp.kernel_release} (the host kernel qmpgmem ran on)",
                "valid": True,
                "misc": {"kernel_release": fp.kernel_release},
            },
        )
        image = _image(fp)
        build_id = f"{origin}:image-{_hash(image)}"
        qemus = ", ".join(q.version or q.path for q in fp.qemu) or "no QEMU"
        builds.setdefault(
            build_id,
            {
                "id": build_id,
                "origin": origin,
                "checkout_id": checkout_id,
                "architecture": "x86_64",
                "comment": f"host image: Linux {fp.kernel_release}, QEMU {qemus}",
                "status": "PASS",
                "misc": _no_nulls(image),
            },
        )
        env = _environment(host)
        for row in agg.rows:
            status, cell = agg.state(row, host)
            kcidb_status = STATUS.get(status)
            if kcidb_status is None:  # absent from the host's reports, or would-run (a plan)
                continue
            stamp = (cell.created if cell else host.created[-1]).replace(":", "")
            path = _path(row)
            test: dict[str, Any] = {
                "id": f"{origin}:{host.id}:{stamp}:{path}",
                "origin": origin,
                "build_id": build_id,
                "path": path,
                "status": kcidb_status,
                "environment": env,
                "misc": _no_nulls(
                    {"qmpgmem_status": status, "row": row.id, "engine": row.engine,
                     "binary": row.binary or None, "report": cell.file if cell else None}
                ),
            }
            if cell is not None:
                test["start_time"] = cell.created
                if cell.duration_s is not None:
                    test["duration"] = cell.duration_s
                reason = cell.reason.replace("\0", "")
                if reason:
                    test["comment"] = reason[:1000]
                    test["log_excerpt"] = reason[:_EXCERPT_MAX]
            else:
                test["comment"] = "not run: " + ", ".join(host.interrupted)
            tests.append(test)
    return {
        "version": dict(KCIDB_VERSION),
        "checkouts": list(checkouts.values()),
        "builds": list(builds.values()),
        "tests": tests,
    }
