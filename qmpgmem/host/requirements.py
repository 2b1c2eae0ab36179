"""A scenario's ``requires`` list against the probed facts: run, or skip with the reason.

Why strings and not a schema of their own: a scenario writes ``requires: [guest_memfd,
"vm_type:sev-snp", "qemu>=11.0"]`` — short, greppable, and validated here when the scenario
loads (:func:`check_requirement_syntax`), so a typo is a scenario error, never a silent skip.

A requirement is ``NAME``, ``NAME:ARG`` or ``qemu OP VERSION``. Evaluation is pure (facts
in, reason out) and each reason names the requirement and the value that failed it, e.g.
``needs memory_attributes_private; KVM_CAP_MEMORY_ATTRIBUTES=0 on default VM``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from qmpgmem.errors import ScenarioError
from qmpgmem.host.decode import VM_TYPE_NAMES
from qmpgmem.host.facts import HostFacts, KvmFacts, QemuFacts
from qmpgmem.host.firmware import FIRMWARE_NAMES
from qmpgmem.host.kernel import BACKEND_MODULES

__all__ = [
    "KNOWN_REQUIREMENTS",
    "check_requirement_syntax",
    "evaluate_requirement",
    "evaluate_requirements",
]

#: Backends on which a guest hypercall (vmcall/vmmcall) comes back to the guest.
HYPERCALL_RETURNING_BACKENDS: Final = ("kvm_intel", "kvm_amd")
_HOST_ENABLEMENT: Final = {
    "sev": "kvm_amd",
    "sev_es": "kvm_amd",
    "sev_snp": "kvm_amd",
    "tdx": "kvm_intel",
}
_VERSION = re.compile(r"(qemu|kernel)\s*(>=|<=|==|!=|>|<)\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_KERNEL_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_OPS: Final[Mapping[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}

_Check = Callable[[str, KvmFacts, QemuFacts | None], str | None]


@dataclass(frozen=True)
class _Rule:
    spelling: str
    meaning: str
    check: _Check  # (arg, kvm, qemu) -> None when met, else the observed value
    arg: str | None = None  # None: takes no argument; else what the argument names
    validate: Callable[[str], str | None] | None = None
    needs_qemu: bool = False


# ---- observations ----------------------------------------------------------------------------
def _no_kvm(kvm: KvmFacts) -> str | None:
    return None if kvm.available else f"/dev/kvm unavailable ({kvm.unavailable_reason})"


def _cap_at_least_one(cap: str) -> _Check:
    def check(_: str, kvm: KvmFacts, __: QemuFacts | None) -> str | None:
        if (bad := _no_kvm(kvm)) is not None:
            return bad
        return None if kvm.cap(cap) > 0 else f"{cap}={kvm.cap(cap)} on /dev/kvm"

    return check


def _bits(value: int, names: list[str]) -> str:
    return f"{value:#x} ({', '.join(names) if names else 'none'})"


def _gmem_flag(flag: str) -> _Check:
    def check(_: str, kvm: KvmFacts, __: QemuFacts | None) -> str | None:
        if (bad := _no_kvm(kvm)) is not None:
            return bad
        if flag in kvm.gmem_flags:
            return None
        cap = "KVM_CAP_GUEST_MEMFD_FLAGS"
        return f"{cap}={_bits(kvm.cap(cap), kvm.gmem_flags)} on /dev/kvm"

    return check


def _memory_attributes_private(arg: str, kvm: KvmFacts, _: QemuFacts | None) -> str | None:
    if (bad := _no_kvm(kvm)) is not None:
        return bad
    asked = [arg] if arg else list(kvm.memory_attributes)
    if any("private" in kvm.memory_attributes.get(vm_type, []) for vm_type in asked):
        return None
    seen = []
    for vm_type in asked:
        if vm_type in kvm.memory_attributes:
            raw = kvm.vm_caps.get(vm_type, {}).get("KVM_CAP_MEMORY_ATTRIBUTES", 0)
            seen.append(f"KVM_CAP_MEMORY_ATTRIBUTES={raw} on {vm_type} VM")
        elif vm_type in kvm.vm_errors:
            seen.append(f"no {vm_type} VM: {kvm.vm_errors[vm_type]}")
        else:
            seen.append(f"VM type {vm_type} not offered (KVM_CAP_VM_TYPES lacks it)")
    return ", ".join(seen) if seen else "no VM type could be probed"


def _exit_hypercall(_: str, kvm: KvmFacts, __: QemuFacts | None) -> str | None:
    if (bad := _no_kvm(kvm)) is not None:
        return bad
    if "map_gpa_range" in kvm.exit_hypercall:
        return None
    cap = "KVM_CAP_EXIT_HYPERCALL"
    return f"{cap}={_bits(kvm.cap(cap), kvm.exit_hypercall)} on /dev/kvm"


def _vm_type(arg: str, kvm: KvmFacts, _: QemuFacts | None) -> str | None:
    if (bad := _no_kvm(kvm)) is not None:
        return bad
    if arg in kvm.vm_types:
        return None
    return f"{kvm.vm_types_text()} on /dev/kvm"


def _backend(arg: str, kvm: KvmFacts, _: QemuFacts | None) -> str | None:
    if kvm.backend is not None and arg in kvm.backend.split("+"):
        return None
    return f"KVM backend is {kvm.backend or 'none (no vendor module loaded)'}"


def _hypercall_returns(_: str, kvm: KvmFacts, __: QemuFacts | None) -> str | None:
    if kvm.backend in HYPERCALL_RETURNING_BACKENDS:
        return None
    if kvm.backend is None:
        return "no KVM vendor module loaded"
    return f"KVM backend is {kvm.backend}: a guest vmcall/vmmcall does not return there"


def _host_enabled(arg: str, kvm: KvmFacts, _: QemuFacts | None) -> str | None:
    value = getattr(kvm, arg)
    if value:
        return None
    module = _HOST_ENABLEMENT[arg]
    if value is None:
        return f"{module} not loaded (/sys/module/{module}/parameters/{arg} absent)"
    return f"/sys/module/{module}/parameters/{arg}=N"


def _qemu(_: str, __: KvmFacts, qemu: QemuFacts | None) -> str | None:
    return None if qemu is not None else "no QEMU binary probed"


def _qemu_type(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    if qemu.has_type(arg):
        return None
    return f"{qemu.binary} (QEMU {qemu.version_str}) has no QOM type {arg} (qom-list-types)"


def _split_pair(arg: str) -> tuple[str | None, str]:
    first, sep, rest = arg.partition(":")
    return (first, rest) if sep else (None, first)


def _qemu_machine_prop(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    machine, prop = _split_pair(arg)
    if qemu.has_machine_prop(prop, machine):
        return None
    where = machine or "/".join(qemu.machine_props) or "any probed machine"
    return (
        f"{qemu.binary} (QEMU {qemu.version_str}) machine {where} has no property {prop} "
        "(qom-list-properties)"
    )


def _qemu_backend_prop(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    backend, prop = _split_pair(arg)
    assert backend is not None  # validated
    if qemu.has_backend_prop(backend, prop):
        return None
    if not qemu.has_type(backend):
        return f"{qemu.binary} (QEMU {qemu.version_str}) has no QOM type {backend}"
    return (
        f"{qemu.binary} (QEMU {qemu.version_str}) {backend} has no property {prop} "
        "(qom-list-properties)"
    )


def _qemu_accel(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    if arg in qemu.accelerators:
        return None
    return f"{qemu.binary} accelerators are {', '.join(qemu.accelerators) or 'none'}"


def _qemu_qmp(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    if arg in qemu.qmp_commands:
        return None
    return f"{qemu.binary} (QEMU {qemu.version_str}) has no QMP command {arg} (query-qmp-schema)"


def _firmware(arg: str, _: KvmFacts, qemu: QemuFacts | None) -> str | None:
    assert qemu is not None
    if arg in qemu.firmware:
        return None
    return f"no {arg} image found (have: {', '.join(qemu.firmware) or 'none'})"


# ---- argument validation ---------------------------------------------------------------------
def _one_of(choices: tuple[str, ...] | list[str], what: str) -> Callable[[str], str | None]:
    def validate(arg: str) -> str | None:
        return None if arg in choices else f"unknown {what} {arg!r}; known: {', '.join(choices)}"

    return validate


_QOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _qom_name(what: str) -> Callable[[str], str | None]:
    def validate(arg: str) -> str | None:
        return None if _QOM_NAME.fullmatch(arg) else f"{arg!r} is not a valid {what}"

    return validate


def _pair(first: str, second: str, first_required: bool) -> Callable[[str], str | None]:
    def validate(arg: str) -> str | None:
        head, prop = _split_pair(arg)
        if head is None and first_required:
            return f"expected {first}:{second}, got {arg!r}"
        for part in (head, prop):
            if part is not None and not _QOM_NAME.fullmatch(part):
                return f"{part!r} is not a valid QOM name in {arg!r}"
        return None

    return validate


_VM_TYPE_CHOICES: Final = tuple(VM_TYPE_NAMES.values())

_RULES: Final[dict[str, _Rule]] = {
    r.spelling.split(":")[0]: r
    for r in (
        _Rule("kvm", "/dev/kvm opens", lambda _a, k, _q: _no_kvm(k)),
        _Rule(
            "user_memory2",
            "KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2)",
            _cap_at_least_one("KVM_CAP_USER_MEMORY2"),
        ),
        _Rule(
            "guest_memfd",
            "KVM_CAP_GUEST_MEMFD (KVM_CREATE_GUEST_MEMFD)",
            _cap_at_least_one("KVM_CAP_GUEST_MEMFD"),
        ),
        _Rule(
            "guest_memfd_mmap",
            "GUEST_MEMFD_FLAG_MMAP in KVM_CAP_GUEST_MEMFD_FLAGS",
            _gmem_flag("mmap"),
        ),
        _Rule(
            "guest_memfd_init_shared",
            "GUEST_MEMFD_FLAG_INIT_SHARED in KVM_CAP_GUEST_MEMFD_FLAGS",
            _gmem_flag("init_shared"),
        ),
        _Rule(
            "memory_attributes_private",
            "KVM_MEMORY_ATTRIBUTE_PRIVATE on some VM type (or on the VM type named)",
            _memory_attributes_private,
            arg="",  # optional VM type
            validate=_one_of(_VM_TYPE_CHOICES, "VM type"),
        ),
        _Rule(
            "pre_fault_memory",
            "KVM_CAP_PRE_FAULT_MEMORY (KVM_PRE_FAULT_MEMORY)",
            _cap_at_least_one("KVM_CAP_PRE_FAULT_MEMORY"),
        ),
        _Rule(
            "exit_hypercall_map_gpa_range",
            "KVM_HC_MAP_GPA_RANGE in KVM_CAP_EXIT_HYPERCALL",
            _exit_hypercall,
        ),
        _Rule(
            "vm_type:<type>",
            "the VM type's bit in KVM_CAP_VM_TYPES",
            _vm_type,
            arg="VM type",
            validate=_one_of(_VM_TYPE_CHOICES, "VM type"),
        ),
        _Rule(
            "backend:<module>",
            "the KVM vendor module serving /dev/kvm",
            _backend,
            arg="module",
            validate=_one_of(BACKEND_MODULES, "KVM backend"),
        ),
        _Rule(
            "hypercall_returns",
            "a guest vmcall/vmmcall returns to the guest (kvm_intel, kvm_amd; not kvm_pvm)",
            _hypercall_returns,
        ),
        _Rule(
            "host_enabled:<feature>",
            "SEV/SEV-ES/SNP/TDX enabled in the vendor module's parameters",
            _host_enabled,
            arg="feature",
            validate=_one_of(tuple(_HOST_ENABLEMENT), "host feature"),
        ),
        _Rule("qemu", "a QEMU binary was probed", _qemu, needs_qemu=True),
        _Rule(
            "qemu_type:<qom-type>",
            "the QOM type exists (qom-list-types)",
            _qemu_type,
            arg="QOM type",
            validate=_qom_name("QOM type"),
            needs_qemu=True,
        ),
        _Rule(
            "qemu_machine_prop:[<machine>:]<property>",
            "the machine property exists on the machine (default: every probed machine)",
            _qemu_machine_prop,
            arg="property",
            validate=_pair("machine", "property", first_required=False),
            needs_qemu=True,
        ),
        _Rule(
            "qemu_backend_prop:<backend-type>:<property>",
            "the memory backend type has the property (qom-list-properties)",
            _qemu_backend_prop,
            arg="backend and property",
            validate=_pair("backend-type", "property", first_required=True),
            needs_qemu=True,
        ),
        _Rule(
            "qemu_accel:<accel>",
            "the accelerator is compiled in",
            _qemu_accel,
            arg="accelerator",
            validate=_qom_name("accelerator"),
            needs_qemu=True,
        ),
        _Rule(
            "qemu_qmp:<command>",
            "the QMP command exists (query-qmp-schema)",
            _qemu_qmp,
            arg="QMP command",
            validate=_qom_name("QMP command"),
            needs_qemu=True,
        ),
        _Rule(
            "firmware:<name>",
            "the firmware image exists",
            _firmware,
            arg="firmware",
            validate=_one_of(FIRMWARE_NAMES, "firmware"),
            needs_qemu=True,
        ),
    )
}

#: Every requirement spelling -> what it checks (for docs, errors and the JSON Schema).
KNOWN_REQUIREMENTS: Final[Mapping[str, str]] = {
    **{(r.spelling + ("[:<vm-type>]" if r.arg == "" else "")): r.meaning for r in _RULES.values()},
    "qemu<op><version>": "the QEMU version compares (op: >=, <=, ==, !=, >, <; e.g. qemu>=11.0)",
    "kernel<op><version>": "the kernel release compares (e.g. kernel>=6.18)",
}


def _parse(s: str) -> tuple[_Rule | None, str, str | None]:
    """(rule, argument, error); a version requirement has rule None and the text as argument."""
    text = s.strip()
    if _VERSION.fullmatch(text):
        return None, text, None
    if text.startswith(("qemu", "kernel")) and any(c in text for c in "<>=!"):
        return None, text, f"malformed version requirement {s!r}; expected e.g. qemu>=11.0"
    name, sep, arg = text.partition(":")
    rule = _RULES.get(name)
    if rule is None:
        return None, "", f"unknown requirement {s!r}; known: {', '.join(KNOWN_REQUIREMENTS)}"
    if rule.arg is None and sep:
        return None, "", f"requirement {name!r} takes no argument, got {s!r}"
    if rule.arg and not arg:
        return None, "", f"requirement {name!r} needs an argument ({rule.spelling})"
    if arg and rule.validate is not None and (error := rule.validate(arg)) is not None:
        return None, "", f"requirement {s!r}: {error}"
    return rule, arg, None


def check_requirement_syntax(s: str) -> str | None:
    """None if ``s`` is a known, well-formed requirement; else what is wrong with it."""
    return _parse(s)[2]


def _version_reason(text: str, kvm: KvmFacts, qemu: QemuFacts | None) -> str | None:
    """Compare as many version parts as the requirement names (qemu==10.0 matches 10.0.2)."""
    match = _VERSION.fullmatch(text)
    assert match is not None
    wanted = tuple(int(g) for g in match.groups()[2:] if g is not None)
    if match[1] == "kernel":
        release = _KERNEL_RELEASE.match(kvm.kernel_release)
        if release is None:
            return f"kernel release {kvm.kernel_release!r} has no version number"
        have = tuple(int(g or 0) for g in release.groups())
        seen = f"kernel release is {kvm.kernel_release}"
    elif qemu is None:
        return "no QEMU binary probed"
    else:
        have, seen = qemu.version, f"{qemu.binary} is QEMU {qemu.version_str}"
    return None if _OPS[match[2]](have[: len(wanted)], wanted) else seen


def evaluate_requirement(
    s: str, facts: HostFacts, qemu: QemuFacts | None = None, *, vm_type: str | None = None
) -> str | None:
    """None when the requirement holds, else ``needs <s>; <observed value>``.

    ``vm_type`` is the scenario's KVM VM type: a bare ``memory_attributes_private`` then asks
    about that type (without it: about any type the host offers).

    :raise ScenarioError: ``s`` is not a known requirement (scenarios are validated at load
        time, so this means a caller skipped validation).
    """
    rule, arg, error = _parse(s)
    if error is not None:
        raise ScenarioError(error)
    text = s.strip()
    if rule is _RULES["memory_attributes_private"] and not arg and vm_type is not None:
        arg = vm_type
    if rule is None:
        observed = _version_reason(text, facts.kvm, qemu)
    elif rule.needs_qemu and qemu is None:
        observed = "no QEMU binary probed"
    else:
        observed = rule.check(arg, facts.kvm, qemu)
    return None if observed is None else f"needs {text}; {observed}"


def evaluate_requirements(
    requires: list[str],
    facts: HostFacts,
    qemu: QemuFacts | None = None,
    *,
    vm_type: str | None = None,
) -> str | None:
    """None when every requirement holds, else the reasons of those that do not (" | ")."""
    reasons = [
        r
        for s in requires
        if (r := evaluate_requirement(s, facts, qemu, vm_type=vm_type)) is not None
    ]
    return " | ".join(reasons) if reasons else None
