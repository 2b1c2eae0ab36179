"""Which QMP commands reach the host, read from the binary's own ``query-qmp-schema``.

Why from the schema: QEMU grows commands and arguments every release; a hand list of
"dangerous commands" is stale the day a new one lands. The schema names every argument of
every command down to the leaves (type names are masked, member names are not), so the rule
is stated on member names and union cases, and the list follows from the binary in use
(docs/security.md shows it for QEMU 10.0.2 and 11.1.3; ``qmpgmem probe`` counts it).

The rule. A command *reaches the host* when its argument type, walked recursively through
objects, union variants, alternates and arrays, has

* a string member named like a host path (:data:`PATH_MEMBERS`: ``filename``, ``path``,
  ``mem-path``, ``dir``, ``device``...), a program or command line (:data:`PROGRAM_MEMBERS`:
  ``command-line``, ``script``, ``helper``, ``args``...), a file descriptor
  (:data:`FD_MEMBERS`), a URI (:data:`URI_MEMBERS`: ``uri``, ``url``, ``protocol``) or a
  network address (:data:`NETWORK_MEMBERS`: ``host``, ``port``, ``addr``...);
* a member of type ``any``, whose value the schema cannot judge (``qom-set``'s ``value``);
* a union case that selects a host resource by its name alone (:data:`DANGER_CASES`:
  migration to ``exec``, sockets of type ``inet``/``vsock``/``fd``, the ``nvme`` block
  driver that takes over a host PCI device...);

or it is one of the few commands whose danger the schema cannot show
(:data:`OPAQUE_COMMANDS`: ``device_add`` takes any device property, ``add-fd`` receives a
descriptor, ``netdev_add`` reaches the host network even with no address given,
``human-monitor-command`` runs any HMP command).

A step is judged on the arguments it gives (:meth:`QmpPolicy.judge`): a path member whose
value is a plain file name (``dump.bin``) stays inside the run directory, because QEMU runs
there (engines/qemu/process.py), and so does a ``file:NAME`` URI; every other use of the
members and cases above is refused without ``--allow-unsafe``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "DANGER_CASES",
    "FD_MEMBERS",
    "NETWORK_MEMBERS",
    "OPAQUE_COMMANDS",
    "PATH_MEMBERS",
    "PROGRAM_MEMBERS",
    "QOM_PATH_COMMANDS",
    "URI_MEMBERS",
    "Finding",
    "QmpPolicy",
    "Reach",
    "is_plain_name",
    "judge_without_schema",
]


class Reach(StrEnum):
    """How an argument reaches the host."""

    PATH = "path"  # a host file or directory QEMU opens or creates
    PROGRAM = "program"  # a program or command line QEMU runs
    FD = "fd"  # a file descriptor of QEMU's, by name or number
    URI = "uri"  # a URI QEMU opens, connects to or runs (exec:, fd:, unix:, tcp:, http:)
    NETWORK = "network"  # a host network address or interface
    DEVICE = "device"  # a host device QEMU takes over
    OPAQUE = "opaque"  # a value the schema cannot judge


_WHY: Final = {
    Reach.PATH: "a host file QEMU opens or creates; only a plain file name (inside the run "
    "directory, where QEMU runs) is allowed",
    Reach.PROGRAM: "a program or command line QEMU runs",
    Reach.FD: "a file descriptor of QEMU's (by name, or by number: QMP's own socket among them)",
    Reach.URI: "a URI QEMU opens, connects to or runs (exec:, fd:, unix:, tcp:...); only "
    "file:NAME inside the run directory is allowed",
    Reach.NETWORK: "a host network address, port or interface",
    Reach.DEVICE: "a host device QEMU takes over",
    Reach.OPAQUE: "a value of any type, which the schema cannot judge",
}

#: String members that name a host file or directory.
PATH_MEMBERS: Final = frozenset(
    {
        "backing-file", "base", "bootfile", "conf", "config", "data-file", "device",
        "dh-cert-file", "dir", "evdev", "file", "filename", "image", "in", "log", "logfile",
        "mem-path", "mountpoint", "out", "overlay", "path", "session-file", "sev-device",
        "snapshot-file", "sock", "target", "tftp", "top", "vhostdev",
    }
)  # fmt: skip
#: Members that name a program, its arguments or a command line.
PROGRAM_MEMBERS: Final = frozenset(
    {
        "args", "command-line", "cpr-exec-command", "downscript", "guestfwd", "helper",
        "param", "script", "smb",
    }
)  # fmt: skip
#: Members that name or number a file descriptor.
FD_MEMBERS: Final = frozenset({"fd", "fdname", "fds", "fdset-id", "vhostfd", "vhostfds"})
#: String members that are URIs.
URI_MEMBERS: Final = frozenset({"protocol", "uri", "url"})
#: Members that are network addresses, ports or interfaces.
NETWORK_MEMBERS: Final = frozenset(
    {
        "addr", "address", "connect", "host", "hostfwd", "hostname", "if", "ifname",
        "listen", "localaddr", "mcast", "port", "portal", "server", "udp",
    }
)  # fmt: skip
#: Union cases that select a host resource by their name alone.
DANGER_CASES: Final[Mapping[str, Reach]] = {
    "exec": Reach.PROGRAM,  # MigrationAddress: run a program, stream into its stdin
    "fd": Reach.FD,  # SocketAddress: an fd of QEMU's by name or number
    "inet": Reach.NETWORK,
    "vsock": Reach.NETWORK,
    "rdma": Reach.NETWORK,
    "udp": Reach.NETWORK,
    "braille": Reach.NETWORK,  # chardev: connects to the host's brlapi daemon
    "nvme": Reach.DEVICE,  # blockdev: takes over a host NVMe PCI function (vfio)
    "secret_keyring": Reach.DEVICE,  # object: reads a key of the kernel keyring
}
#: Commands whose danger is not in their argument names.
OPAQUE_COMMANDS: Final[Mapping[str, tuple[Reach, str]]] = {
    "human-monitor-command": (
        Reach.PROGRAM,
        "runs any HMP command, those QMP does not have included",
    ),
    "device_add": (
        Reach.OPAQUE,
        "takes any property of the device, which the schema does not list (files for "
        "loader or pflash, host devices for vfio-pci, chardevs)",
    ),
    "add-fd": (Reach.FD, "receives a file descriptor passed along with the command"),
    "netdev_add": (
        Reach.NETWORK,
        "every netdev but hubport reaches the host network or runs a program, with no "
        "address given too (tap runs /etc/qemu-ifup, bridge qemu-bridge-helper)",
    ),
}
#: Commands whose ``path`` is a QOM path (``/machine/...``), not a host file.
QOM_PATH_COMMANDS: Final = frozenset({"qom-get", "qom-list", "qom-list-get", "qom-set"})

_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,254}")


def is_plain_name(value: str) -> bool:
    """A file name QEMU resolves inside its working directory (the run directory): no
    ``/``, no ``:`` (a block-layer protocol prefix), not hidden, not ``..``."""
    return _PLAIN_NAME.fullmatch(value) is not None


def _member_reach(command: str, name: str) -> Reach | None:
    if name in PATH_MEMBERS and not (name == "path" and command in QOM_PATH_COMMANDS):
        return Reach.PATH
    if name in PROGRAM_MEMBERS:
        return Reach.PROGRAM
    if name in FD_MEMBERS:
        return Reach.FD
    if name in URI_MEMBERS:
        return Reach.URI
    if name in NETWORK_MEMBERS:
        return Reach.NETWORK
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _value_allowed(reach: Reach, value: Any) -> bool:
    """Whether this value of a member of this kind stays inside the run directory."""
    if reach is Reach.PATH:
        return all(is_plain_name(s) for s in _strings(value)) and not isinstance(value, int)
    if reach is Reach.URI:
        return all(s.startswith("file:") and is_plain_name(s[5:]) for s in _strings(value))
    return False


@dataclass(frozen=True)
class Finding:
    """One argument of one command that reaches the host."""

    command: str
    reach: Reach
    #: where in the arguments: ``uri``, ``channels[0].addr.transport=exec``, or "" (command)
    where: str
    value: Any = None
    detail: str = ""

    def __str__(self) -> str:
        why = self.detail or _WHY[self.reach]
        if not self.where:
            return f"{self.command} {why}"
        shown = ""
        if self.value is not None:
            text = repr(self.value)
            shown = " " + (text if len(text) <= 80 else text[:76] + "...")
        return f"argument {self.where}{shown} is {why}"


class QmpPolicy:
    """The rule applied to one binary's ``query-qmp-schema`` (a list of entities)."""

    def __init__(self, schema: Sequence[Mapping[str, Any]]) -> None:
        self._types: dict[str, Mapping[str, Any]] = {str(e["name"]): e for e in schema}
        self._commands: dict[str, str] = {
            str(e["name"]): str(e.get("arg-type", "0"))
            for e in schema
            if e.get("meta-type") == "command"
        }

    @property
    def commands(self) -> list[str]:
        return sorted(self._commands)

    # -- the command's type, walked without values ---------------------------------------------
    def reaches(self, command: str) -> list[Finding]:
        """Every way ``command`` can reach the host, one per kind and member (sorted)."""
        if command not in self._commands:
            return []
        found: dict[tuple[Reach, str], Finding] = {}
        if command in OPAQUE_COMMANDS:
            reach, why = OPAQUE_COMMANDS[command]
            found[(reach, "")] = Finding(command, reach, "", detail=why)
        for finding in self._walk_type(command, self._commands[command], "", set()):
            found.setdefault((finding.reach, finding.where.rsplit(".", 1)[-1]), finding)
        return sorted(found.values(), key=lambda f: (f.where, f.reach))

    def unsafe_commands(self) -> dict[str, list[Finding]]:
        """Command -> how it reaches the host, for every command that does."""
        out = {}
        for command in self.commands:
            reaches = self.reaches(command)
            if reaches:
                out[command] = reaches
        return out

    def _walk_type(self, command: str, name: str, where: str, seen: set[str]) -> Iterator[Finding]:
        entity = self._types.get(name)
        if entity is None or name in seen:
            return
        seen.add(name)
        meta = entity.get("meta-type")
        if meta == "object":
            for member in entity.get("members", []):
                mname, mtype = str(member["name"]), str(member["type"])
                at = f"{where}.{mname}" if where else mname
                reach = _member_reach(command, mname)
                if reach is not None and self._carries_value(mtype, reach):
                    yield Finding(command, reach, at)
                if self._is_any(mtype):
                    yield Finding(command, Reach.OPAQUE, at)
                yield from self._walk_type(command, mtype, at, seen)
            tag = entity.get("tag")
            for variant in entity.get("variants", []):
                case = str(variant["case"])
                if case in DANGER_CASES:
                    yield Finding(command, DANGER_CASES[case], f"{where}.{tag}={case}".lstrip("."))
                yield from self._walk_type(command, str(variant["type"]), where, seen)
        elif meta == "array":
            yield from self._walk_type(command, str(entity["element-type"]), f"{where}[]", seen)
        elif meta == "alternate":
            for member in entity.get("members", []):
                yield from self._walk_type(command, str(member["type"]), where, seen)

    def _json_types(self, name: str, depth: int = 0) -> set[str]:
        """The JSON types a value of type ``name`` may have (arrays: their elements')."""
        entity = self._types.get(name, {})
        meta = entity.get("meta-type")
        if meta == "builtin":
            return {str(entity.get("json-type"))}
        if meta == "enum":
            return {"enum"}
        if meta == "array" and depth < 4:
            return self._json_types(str(entity["element-type"]), depth + 1)
        if meta == "alternate" and depth < 4:
            out: set[str] = set()
            for member in entity.get("members", []):
                out |= self._json_types(str(member["type"]), depth + 1)
            return out
        return {str(meta)}

    def _carries_value(self, type_name: str, reach: Reach) -> bool:
        """A member of this type can carry what ``reach`` is about (a string; for file
        descriptors and ports a number too)."""
        kinds = self._json_types(type_name)
        if reach in (Reach.FD, Reach.NETWORK, Reach.PROGRAM):
            return bool(kinds & {"string", "int", "value"})
        return bool(kinds & {"string", "value"})

    def _is_any(self, type_name: str) -> bool:
        return "value" in self._json_types(type_name)

    # -- one step's arguments, walked along the type ---------------------------------------------
    def judge(self, command: str, arguments: Mapping[str, Any]) -> list[Finding]:
        """The arguments of this step that reach the host ([] when none does).

        A command this binary does not have is not judged here (``qmp_schema_problem``
        makes it an error of its own).
        """
        if command not in self._commands:
            return []
        out: list[Finding] = []
        if command in OPAQUE_COMMANDS:
            reach, why = OPAQUE_COMMANDS[command]
            out.append(Finding(command, reach, "", detail=why))
        out += self._judge_value(command, self._commands[command], dict(arguments), "", 0)
        return out

    def _judge_value(
        self, command: str, name: str, value: Any, where: str, depth: int
    ) -> list[Finding]:
        entity = self._types.get(name)
        if entity is None or depth > 64:
            return []
        meta = entity.get("meta-type")
        out: list[Finding] = []
        if meta == "object" and isinstance(value, dict):
            members = {str(m["name"]): str(m["type"]) for m in entity.get("members", [])}
            for key, item in value.items():
                if key not in members:
                    continue  # QEMU refuses unknown members (or a variant knows it: below)
                at = f"{where}.{key}" if where else key
                reach = _member_reach(command, key)
                if self._is_any(members[key]):
                    out.append(Finding(command, Reach.OPAQUE, at, item))
                elif (
                    reach is not None
                    and self._carries_value(members[key], reach)
                    and not _value_allowed(reach, item)
                ):
                    out.append(Finding(command, reach, at, item))
                out += self._judge_value(command, members[key], item, at, depth + 1)
            tag = entity.get("tag")
            case = value.get(str(tag)) if tag else None
            for variant in entity.get("variants", []):
                if variant["case"] == case:
                    if case in DANGER_CASES:
                        at = f"{where}.{tag}" if where else str(tag)
                        out.append(Finding(command, DANGER_CASES[case], at, case))
                    out += self._judge_value(command, str(variant["type"]), value, where, depth)
        elif meta == "array" and isinstance(value, list):
            for index, item in enumerate(value):
                out += self._judge_value(
                    command, str(entity["element-type"]), item, f"{where}[{index}]", depth + 1
                )
        elif meta == "alternate":
            for member in entity.get("members", []):
                mtype = str(member["type"])
                if self._fits(mtype, value):
                    out += self._judge_value(command, mtype, value, where, depth + 1)
                    break
        return out

    def _fits(self, type_name: str, value: Any) -> bool:
        kinds = self._json_types(type_name)
        if isinstance(value, dict):
            return "object" in kinds
        if isinstance(value, list):
            return "array" in kinds
        if isinstance(value, bool):
            return "boolean" in kinds
        if isinstance(value, int | float):
            return bool(kinds & {"int", "number"})
        if isinstance(value, str):
            return bool(kinds & {"string", "enum"})
        return value is None and "null" in kinds


def judge_without_schema(command: str, arguments: Mapping[str, Any]) -> list[Finding]:
    """The same tables applied to the argument names alone, at any depth (``validate``).

    Without the binary's schema no position is known, so this errs on the side of refusing:
    any key named in a table is judged by its value, any string value that is a danger case
    counts, and ``qom-set`` (whose ``value`` is of type ``any``) is opaque. A run judges
    against the binary's schema (:meth:`QmpPolicy.judge`), which also knows the ``any``
    arguments of commands these tables do not name.
    """
    out: list[Finding] = []
    if command in OPAQUE_COMMANDS:
        reach, why = OPAQUE_COMMANDS[command]
        out.append(Finding(command, reach, "", detail=why))
    if command == "qom-set":
        out.append(Finding(command, Reach.OPAQUE, "value", arguments.get("value")))
        return out

    def walk(value: Any, where: str) -> Iterable[Finding]:
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{where}.{key}" if where else str(key)
                reach = _member_reach(command, str(key))
                if reach is not None and not isinstance(item, dict | bool):
                    if not _value_allowed(reach, item):
                        yield Finding(command, reach, at, item)
                elif isinstance(item, str) and item in DANGER_CASES:
                    yield Finding(command, DANGER_CASES[item], at, item)
                yield from walk(item, at)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{where}[{index}]")

    out += walk(dict(arguments), "")
    return out


def markdown_list(policy: QmpPolicy) -> str:
    """The unsafe commands of one binary as docs/security.md lists them: one line each,
    the command and the argument kinds that reach the host."""
    lines = []
    for command, findings in policy.unsafe_commands().items():
        kinds = sorted({str(f.reach) for f in findings})
        lines.append(f"- `{command}`: {', '.join(kinds)}")
    return "\n".join(lines)
