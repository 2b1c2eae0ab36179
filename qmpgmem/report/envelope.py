"""The one JSON envelope of every report qmpgmem writes, and its published JSON Schema.

Every document is ``{"schema_version": 1, "kind", "qmpgmem_version", "created", "host", ...}``
followed by the command's body: ``run`` (also ``lab run`` and ``lab selftests``) adds
``summary`` and ``results``; ``probe`` adds ``summary``, ``facts``, ``kvm``, ``qemu`` and
``flavours``; ``kernel-contract`` adds ``counts`` and ``checks``. ``kind`` tells the three
apart (a discriminated union), ``host`` is the same fingerprint in each
(qmpgmem/host/fingerprint.py).

Why models and not dicts: the JSON Schema (``qmpgmem schema --report``) is generated from the
same classes the commands dump, so the published schema cannot drift from the output. Within
``schema_version`` 1 fields are only added; removing or changing the meaning of one bumps it.
Documents allow keys the schema does not name, so a consumer validating with this version's
schema keeps working when a later release adds one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic.json_schema import SkipJsonSchema

from qmpgmem import __version__
from qmpgmem.host.facts import Fact, KvmFacts, QemuFacts
from qmpgmem.report.result import HostInfo, RunReport

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "ContractCheck",
    "ContractCounts",
    "ContractDocument",
    "Envelope",
    "FlavourPlanRecord",
    "ProbeDocument",
    "ProbeSummary",
    "Report",
    "RunDocument",
    "document_json",
    "load_report",
    "report_json_schema",
    "write_document",
    "write_text_atomic",
]

SCHEMA_VERSION: Final = 1
#: The report kinds, as ``kind`` names them and ``qmpgmem schema --report KIND`` takes them.
KINDS: Final = ("run", "probe", "kernel-contract")
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
#: ``created`` as written: ISO 8601 in UTC, to the second (checkable without a format checker)
CREATED_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Envelope(BaseModel):
    """What every report starts with: which schema, which kind, who wrote it when, where."""

    # every field is written, so the serialization schema requires each one
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: str
    qmpgmem_version: str = __version__
    #: when the document was written, ISO 8601 in UTC ("2025-06-01T12:00:00Z")
    created: AwareDatetime = Field(
        default_factory=_now, json_schema_extra={"pattern": CREATED_PATTERN}
    )
    host: HostInfo

    @field_validator("created")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.utcoffset() != dt.timedelta(0):
            raise ValueError("created must be in UTC (…Z)")
        return value


class RunDocument(RunReport, Envelope):
    """``qmpgmem run --json`` (and the lab's runs): the envelope, ``summary``, ``results``."""

    kind: Literal["run"] = "run"
    #: in-process details (never written)
    extra: SkipJsonSchema[dict[str, Any]] = Field(default_factory=dict, exclude=True)

    @classmethod
    def of(cls, report: RunReport, created: dt.datetime | None = None) -> RunDocument:
        fields = {name: getattr(report, name) for name in type(report).model_fields}
        fields.pop("extra", None)
        if created is not None:
            fields["created"] = created
        return cls.model_validate(fields)


class ProbeSummaryQemu(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary: str
    version: str
    confidential_types: list[str]
    memfd_guest_memfd_property: bool
    x_change_vmfd_on_reset: bool


class ProbeSummary(BaseModel):
    """The answers people look for first (``HostFacts.summary()``)."""

    model_config = ConfigDict(extra="allow")

    kernel_release: str
    kvm: bool
    backend: str | None
    guest_memfd: bool
    guest_memfd_flags: list[str]
    vm_types: list[str]
    #: per VM type: KVM_CAP_MEMORY_ATTRIBUTES on a VM of that type has "private"
    memory_attributes_private: dict[str, bool]
    exit_hypercall: list[str]
    qemu: list[ProbeSummaryQemu]


class FlavourPlanRecord(BaseModel):
    """One guest_memfd flavour planned for one binary: the plan, or why it cannot be used."""

    name: str
    usable: bool
    skip_reason: str | None
    machine: str | None
    machine_opts: dict[str, str]
    objects: list[str]
    backend_type: str
    backend_props: dict[str, str]
    bios: str | None
    cpu: str | None


class ProbeDocument(Envelope):
    """``qmpgmem probe --json``: every fact with its source, the raw models, the flavours."""

    kind: Literal["probe"] = "probe"
    summary: ProbeSummary
    #: the rows of the tables: ``{name, value, source}``
    facts: list[Fact]
    kvm: KvmFacts
    qemu: list[QemuFacts]
    #: binary -> flavour name -> plan (empty with ``--no-flavours``)
    flavours: dict[str, dict[str, FlavourPlanRecord]]


class ContractCheck(BaseModel):
    """One kernel-contract check as it ran here (engines/kvm/contract.py ``CheckResult``)."""

    name: str
    outcome: Literal["passed", "failed", "deviation", "skipped"]
    #: what upstream says must happen
    expectation: str
    #: where upstream says it (guest_memfd_test.c, api.rst, ...)
    source: str
    backend: str
    #: what happened when it did not pass: the mismatch, the deviation's reason, the skip's
    detail: str = ""


class ContractCounts(BaseModel):
    passed: int = 0
    failed: int = 0
    deviation: int = 0
    skipped: int = 0


class ContractDocument(Envelope):
    """``qmpgmem kernel-contract --json``: the counts, then each check."""

    kind: Literal["kernel-contract"] = "kernel-contract"
    counts: ContractCounts
    checks: list[ContractCheck]


#: Any report, told apart by ``kind``.
Report = Annotated[RunDocument | ProbeDocument | ContractDocument, Field(discriminator="kind")]
_REPORT: TypeAdapter[RunDocument | ProbeDocument | ContractDocument] = TypeAdapter(Report)
_BY_KIND: Final[dict[str, type[Envelope]]] = {
    "run": RunDocument,
    "probe": ProbeDocument,
    "kernel-contract": ContractDocument,
}


def report_json_schema(kind: str | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of reports as written: of every kind (a ``oneOf`` on
    ``kind``), or of one kind of :data:`KINDS`."""
    if kind is None:
        schema = _REPORT.json_schema(mode="serialization")
        title = "qmpgmem report"
    else:
        schema = _BY_KIND[kind].model_json_schema(mode="serialization")
        title = f"qmpgmem {kind} report"
    schema.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "title": title, **schema}


def load_report(text: str | bytes) -> RunDocument | ProbeDocument | ContractDocument:
    """A report read back (any kind), checked against the models.

    :raise pydantic.ValidationError: the text is not a report of this schema version
    """
    return _REPORT.validate_json(text)


def document_json(doc: Envelope) -> str:
    """The document as written: indented JSON with a final newline."""
    return doc.model_dump_json(indent=2) + "\n"


def write_document(doc: Envelope, path: Path) -> None:
    """Write ``doc`` to ``path`` atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, document_json(doc))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a temporary file in the same directory,
    then ``os.replace``. A reader (or a kill at any moment) sees the old file or the new one,
    never half of one. The file gets the usual mode (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    with contextlib.suppress(OSError):
        m = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
