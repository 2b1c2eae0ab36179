"""Every YAML example in docs/scenarios.md is valid, so the documentation cannot drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from qmpgmem.scenario.model import Scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def base() -> dict[str, Any]:
    return {
        "name": "doc",
        "description": "an example from the documentation",
        "vm": {
            "memory": [
                {"id": "ram0", "size": "16M"},
                {"id": "gmem0", "size": "16M", "backend": "guest_memfd"},
            ]
        },
        "steps": [{"action": "guest.write", "range": {"region": "ram0", "size": 8}, "seed": 1}],
    }


def as_scenario(example: Any) -> dict[str, Any]:
    """Put a documentation snippet where it belongs in an otherwise valid scenario."""
    data = base()
    if isinstance(example, list):
        data["steps"] = example
    elif "memory" in example:
        data["vm"] = {"memory": example["memory"]}
    elif "range" in example:
        data["steps"] = [{"action": "host.read", **example}]
    else:
        data.update(example)
    return data


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 15


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.strip().splitlines()[0][:40])
def test_doc_example_is_valid(block: str) -> None:
    example = YAML(typ="safe").load(block)
    Scenario.model_validate(as_scenario(example))


def test_doc_shows_every_action() -> None:
    from qmpgmem.scenario.model import STEP_ACTIONS

    shown = set(re.findall(r"- action: ([a-z_.]+)", DOC.read_text()))
    assert shown == set(STEP_ACTIONS)
