"""Ask a QEMU binary, over its own QMP monitor, what it can build.

Why QMP and not ``-object help`` text: ``qom-list-types`` / ``qom-list-properties`` /
``query-qmp-schema`` are the interfaces libvirt relies on, so their answers are stable across
versions, and they see what the help text leaves out (inherited properties such as a
sev-snp-guest's ``cbitpos``, machine-class properties such as ``x-change-vmfd-on-reset``).

The binary runs paused with ``-machine none`` (no guest, no /dev/kvm opened), in its own
process group with a parent-death signal (:class:`~qmpgmem.engines.qemu.process.QemuProcess`),
and is always killed before the probe returns. One probe per binary per process: the answers
cannot change while we run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Final

from qemu.qmp import QMPClient, QMPError

from qmpgmem.engines.qemu.process import QemuProcess
from qmpgmem.errors import SetupError, VMLaunchError
from qmpgmem.host.facts import BACKEND_TYPES, CONFIDENTIAL_TYPES, MACHINES, QemuFacts
from qmpgmem.host.firmware import find_firmware

__all__ = ["DEFAULT_QEMU", "PROBE_TIMEOUT", "clear_cache", "probe_qemu", "resolve_binary"]

log = logging.getLogger(__name__)

DEFAULT_QEMU: Final = "qemu-system-x86_64"
#: Seconds for the whole conversation; QEMU answers in ~0.1 s here.
PROBE_TIMEOUT: Final = 20.0

_cache: dict[str, QemuFacts] = {}


def resolve_binary(binary: str) -> str:
    """An absolute path for ``binary`` (searched in PATH when it has no slash).

    :raise SetupError: it does not exist or is not executable.
    """
    found = shutil.which(binary)
    if found is None:
        raise SetupError(f"QEMU binary {binary!r} not found or not executable")
    return str(Path(found).resolve())


def clear_cache() -> None:
    """Forget earlier probes (tests; a binary replaced on disk)."""
    _cache.clear()


def _names(reply: Any) -> list[str]:
    return sorted({str(item["name"]) for item in reply})


async def _execute(client: QMPClient, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """``client.execute`` typed as returning JSON (qemu.qmp declares ``object``)."""
    return await client.execute(command, arguments)


async def _properties(client: QMPClient, typename: str) -> list[str] | None:
    try:
        reply = await _execute(client, "qom-list-properties", {"typename": typename})
    except QMPError as exc:  # the type exists but cannot be instantiated for listing
        log.debug("qom-list-properties %s failed: %s", typename, exc)
        return None
    return _names(reply)


async def _ask(client: QMPClient, binary: str, path: str) -> QemuFacts:
    version = await _execute(client, "query-version")
    v = version["qemu"]
    triple = (int(v["major"]), int(v["minor"]), int(v["micro"]))
    qom_types = _names(await _execute(client, "qom-list-types", {"abstract": False}))
    accels = _names(await _execute(client, "qom-list-types", {"implements": "accel"}))
    kvm = await _execute(client, "query-kvm")

    backend_props: dict[str, list[str]] = {}
    for qom_type in BACKEND_TYPES:
        if qom_type in qom_types:
            props = await _properties(client, qom_type)
            if props is not None:
                backend_props[qom_type] = props
    object_props: dict[str, list[str]] = {}
    for qom_type in CONFIDENTIAL_TYPES:
        if qom_type in qom_types:
            props = await _properties(client, qom_type)
            if props is not None:
                object_props[qom_type] = props

    resolved: dict[str, str] = {}
    for machine in await _execute(client, "query-machines"):
        resolved.setdefault(str(machine["name"]), str(machine["name"]))
        if machine.get("alias"):
            resolved[str(machine["alias"])] = str(machine["name"])
    machine_types: dict[str, str] = {}
    machine_props: dict[str, list[str]] = {}
    for machine in MACHINES:
        if machine not in resolved:
            continue
        machine_types[machine] = resolved[machine]
        props = await _properties(client, f"{resolved[machine]}-machine")
        if props is not None:
            machine_props[machine] = props

    schema = await _execute(client, "query-qmp-schema")
    commands = sorted(e["name"] for e in schema if e.get("meta-type") == "command")
    events = sorted(e["name"] for e in schema if e.get("meta-type") == "event")

    facts = QemuFacts(
        binary=binary,
        version=triple,
        version_str=".".join(map(str, triple)),
        package=str(version.get("package", "")).strip(),
        accelerators=sorted(a.removesuffix("-accel") for a in accels),
        kvm_present=bool(kvm.get("present")),
        qom_types=qom_types,
        backend_props=backend_props,
        object_props=object_props,
        machine_types=machine_types,
        machine_props=machine_props,
        qmp_commands=commands,
        qmp_events=events,
        firmware=find_firmware(path),
    )
    facts.set_qmp_schema(schema)  # for the QMP policy (host/qmp_policy.py), not reported
    return facts


async def _probe_uncached(binary: str, path: str) -> QemuFacts:
    proc = QemuProcess()
    argv = [*proc.paused_monitor_argv(path), "-machine", "none"]
    client = QMPClient(f"probe:{Path(path).name}")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await proc.launch(argv)
            await client.connect(proc.qmp_sock)
            facts = await _ask(client, binary, path)
    except (QMPError, OSError, EOFError, TimeoutError, VMLaunchError) as exc:
        output = proc.output().strip()
        said = f"; QEMU said: {output.splitlines()[-1]}" if output else ""
        raise SetupError(f"cannot probe QEMU {binary!r} over QMP: {exc!r}{said}") from exc
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        await proc.close()
    log.info("probed %s: QEMU %s", path, facts.version_str)
    return facts


async def probe_qemu(binary: str = DEFAULT_QEMU) -> QemuFacts:
    """The facts of one QEMU binary; probed once per process per resolved path.

    :raise SetupError: the binary is missing, does not start, or does not answer QMP.
    """
    path = resolve_binary(binary)
    cached = _cache.get(path)
    if cached is not None:
        return cached if cached.binary == binary else cached.model_copy(update={"binary": binary})
    facts = await _probe_uncached(binary, path)
    _cache[path] = facts
    return facts
