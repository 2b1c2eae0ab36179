"""The JSON reports: every command's real output validates against the schema
``qmpgmem schema --report`` publishes, and a broken document does not.

The schema is taken from the command, as a consumer would take it; the documents come from
real runs: ``probe --json`` asks the real QEMU and /dev/kvm, ``run --json`` boots the micro
guest under QEMU, ``kernel-contract --json`` runs its checks on /dev/kvm.
"""

from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qmpgmem.report.envelope import KINDS, load_report
from tests.conftest import qmpgmem_cli

SCENARIO = """\
name: schema-tiny
description: the guest writes a page and reads it back; the host sees it
vm:
  machine: microvm
  memory:
    - id: m0
      size: 16M
      backend: memfd
      share: true
steps:
  - action: guest.write
    range: {region: m0, offset: 0, size: 4K}
    seed: 1
  - action: guest.verify
    range: {region: m0, offset: 0, size: 4K}
    expect: {pattern: 1}
  - action: host.read
    range: {region: m0, offset: 0, size: 4K}
    expect: {pattern: 1}
"""


def qmpgmem(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return qmpgmem_cli(*args, cwd=cwd, timeout=180)


def published_schema(*kind: str) -> dict[str, Any]:
    done = qmpgmem("schema", "--report", *kind)
    assert done.returncode == 0, done.stderr
    schema: dict[str, Any] = json.loads(done.stdout)
    return schema


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def assert_valid(doc: dict[str, Any], kind: str) -> None:
    """Valid against the union schema and against the schema of its own kind."""
    for schema in (published_schema(), published_schema(kind)):
        errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in
                  validator(schema).iter_errors(doc)]  # fmt: skip
        assert not errors, errors
    assert load_report(json.dumps(doc)).kind == kind


def assert_envelope(doc: dict[str, Any], kind: str) -> None:
    assert list(doc)[:5] == ["schema_version", "kind", "qmpgmem_version", "created", "host"]
    assert doc["schema_version"] == 1 and doc["kind"] == kind
    host = doc["host"]
    assert host["hostname"] and host["kernel_release"] and host["python_version"]
    assert host["qmpgmem_version"] == doc["qmpgmem_version"]


@pytest.fixture(scope="module")
def probe_doc() -> dict[str, Any]:
    done = qmpgmem("probe", "--json", "--no-flavours")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_schema_is_a_union_on_kind() -> None:
    schema = published_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == set(KINDS)
    assert len(schema["oneOf"]) == len(KINDS)
    for kind in KINDS:
        one = published_schema(kind)
        assert one["properties"]["kind"]["const"] == kind
        assert one["properties"]["schema_version"]["const"] == 1
        assert {"schema_version", "kind", "created", "host"} <= set(one["required"])


@pytest.mark.usefixtures("qemu_binary", "kvm_available")
def test_probe_json_validates(probe_doc: dict[str, Any]) -> None:
    assert_envelope(probe_doc, "probe")
    assert_valid(probe_doc, "probe")
    assert probe_doc["host"]["qemu"][0]["version"] == probe_doc["qemu"][0]["version_str"]


@pytest.mark.qemu
@pytest.mark.usefixtures("qemu_binary", "no_leftovers")
def test_run_json_validates(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent(SCENARIO))
    done = qmpgmem("run", "tiny.yaml", "--json", "r.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert_envelope(doc, "run")
    assert_valid(doc, "run")
    (result,) = doc["results"]
    assert result["status"] == "passed" and doc["summary"]["passed"] == 1
    assert doc["host"]["engine"] == "qemu" and doc["host"]["qemu"][0]["version"]


@pytest.mark.usefixtures("kvm_available")
def test_kernel_contract_json_validates(tmp_path: Path) -> None:
    done = qmpgmem("kernel-contract", "--json", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((tmp_path / "c.json").read_text())
    assert_envelope(doc, "kernel-contract")
    assert_valid(doc, "kernel-contract")
    assert doc["host"]["engine"] == "kvm"
    assert sum(doc["counts"].values()) == len(doc["checks"]) >= 25


@pytest.mark.usefixtures("qemu_binary", "kvm_available")
@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        (lambda d: d.update(schema_version=2), ["schema_version"]),
        (lambda d: d.update(kind="report"), ["kind"]),
        (lambda d: d.pop("host"), []),
        (lambda d: d.update(created="2025-06-01 12:00:00+02:00"), ["created"]),
        (lambda d: d["facts"][0].pop("source"), ["facts", 0]),
        (lambda d: d["kvm"].update(api_version="twelve"), ["kvm", "api_version"]),
    ],
    ids=["schema-version-2", "unknown-kind", "no-host", "created-not-utc", "fact-no-source",
         "kvm-field-type"],
)  # fmt: skip
def test_broken_document_fails(probe_doc: dict[str, Any], breakage: Any, where: list[Any]) -> None:
    """The valid probe document, broken one way: the union schema rejects it, the schema
    of its kind names the spot, and reading it back refuses it too."""
    doc = copy.deepcopy(probe_doc)
    breakage(doc)
    assert not validator(published_schema()).is_valid(doc)
    if where != ["kind"]:
        errors = list(validator(published_schema("probe")).iter_errors(doc))
        assert errors and any(list(e.absolute_path) == where for e in errors), [
            (list(e.absolute_path), e.message[:200]) for e in errors
        ]
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        load_report(json.dumps(doc))
