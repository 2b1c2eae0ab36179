"""The JSON Schema accepts what the models accept, checked on the shipped scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from ruamel.yaml import YAML

from qmpgmem.scenario.loader import load_scenario
from qmpgmem.scenario.model import STEP_ACTIONS
from qmpgmem.scenario.schema import scenario_json_schema

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    p for p in (REPO / "scenarios").rglob("*") if p.suffix in {".yaml", ".yml", ".json"}
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def plain(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def test_there_are_shipped_scenarios() -> None:
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_scenario_valid(path: Path, validator: jsonschema.Draft202012Validator) -> None:
    load_scenario(path)  # the models accept it
    errors = [e.message for e in validator.iter_errors(plain(path))]
    assert errors == []


def test_schema_names_every_action_and_uses_aliases() -> None:
    schema = scenario_json_schema()
    mapping = schema["properties"]["steps"]["items"]["discriminator"]["mapping"]
    assert set(mapping) == set(STEP_ACTIONS)
    assert "return" in schema["$defs"]["QmpExpect"]["properties"]
    assert schema["$schema"].endswith("2020-12/schema")


GOOD: dict[str, Any] = {
    "name": "s",
    "description": "d",
    "vm": {
        "memory": [
            {"id": "ram0", "size": "16M"},
            {"id": "g", "size": 4096, "backend": "guest_memfd"},
        ]
    },
    "steps": [
        {
            "action": "guest.write",
            "range": {"region": "ram0", "offset": "0x1000", "size": "4K"},
            "seed": 1,
            "timeout": "2s",
        },
        {
            "action": "guest.convert",
            "range": {"region": "g", "size": "4K"},
            "to": "private",
            "expect": {"refused": None},
        },
        {
            "action": "guest.convert",
            "range": {"region": "g", "size": "4K"},
            "to": "shared",
            "expect": "ok",
        },
        {"action": "host.read", "range": {"region": "ram0", "size": 8}, "expect": "zero"},
        {"action": "sleep", "seconds": 0.5},
    ],
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("colour",), "red"),
        (("vm", "memory", 0, "size"), "16 apples"),
        (("steps", 0, "action"), "guest.wrte"),
        (("steps", 0, "range", "sise"), 8),
        (("steps", 3, "expect"), "zeroo"),
        (("steps", 1, "expect"), "maybe"),
        (("steps", 4, "seconds"), "soon"),
        (("vm", "machine"), "microvn"),
    ],
)
def test_schema_rejects_what_the_models_reject(
    path: tuple[Any, ...], value: Any, validator: jsonschema.Draft202012Validator
) -> None:
    import copy

    from pydantic import ValidationError

    from qmpgmem.scenario.model import Scenario

    assert validator.is_valid(GOOD)
    Scenario.model_validate(GOOD)
    bad = copy.deepcopy(GOOD)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not validator.is_valid(bad)
    with pytest.raises(ValidationError):
        Scenario.model_validate(bad)


def test_schema_rejects_a_bad_file(
    tmp_path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    path = tmp_path / "bad.yaml"
    text = (REPO / "scenarios" / "basic" / "smoke.yaml").read_text()
    path.write_text(text.replace("seed: 1", "seed: 1\n    colour: blue"))
    errors = list(validator.iter_errors(plain(path)))
    assert errors
