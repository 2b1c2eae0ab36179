"""Telling hosts apart by their fingerprint, and saying what differs between two of them.

Why a hash beside the hostname: a platform team re-images a host and runs it again; the
hostname stays, the kernel or QEMU package does not. A host is therefore its hostname plus a
short hash of what the fingerprint says about the machine and its image (CPU, kernel, KVM
backend, QEMU binaries and packages, firmware) — not of the run's engines or of qmpgmem's
own and Python's versions, which change with the tool and not with the host.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from qmpgmem.report.result import HostInfo

__all__ = ["HOST_HASH_LEN", "host_diff", "host_hash", "host_id"]

HOST_HASH_LEN: Final = 8
#: fingerprint fields that describe the tool or the run, not the host image
_NOT_IDENTITY: Final = frozenset({"engine", "qmpgmem_version", "python_version"})


def host_hash(host: HostInfo) -> str:
    """A short, stable hash of the host image's fields of ``host``."""
    data = host.model_dump(mode="json", exclude=set(_NOT_IDENTITY))
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HOST_HASH_LEN]


def host_id(host: HostInfo) -> str:
    """``hostname-hash`` (``ci-runner-7-3fa2b6c1``); ``host-hash`` without a hostname."""
    return f"{host.hostname or 'host'}-{host_hash(host)}"


def host_diff(base: HostInfo, new: HostInfo) -> list[tuple[str, str | None, str | None]]:
    """Every flat fingerprint field (``kernel_release``, ``qemu[0].package_version``) whose
    value differs: (field, base value, new value), None where a side lacks the field."""
    a, b = base.properties(), new.properties()
    keys = list(dict.fromkeys([*a, *b]))
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]
