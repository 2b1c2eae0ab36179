"""The JSON Schema of scenario files, generated from the same models the loader validates with.

Why generated: editors (YAML language servers) and other tools check scenarios against it,
and a hand-written schema would drift from the models. Validation-mode schema, so it describes
what a file may say (sizes as "64M", ``expect: ok``), not what the models dump.
"""

from __future__ import annotations

from typing import Any

from qmpgmem.scenario.model import Scenario

__all__ = ["SCHEMA_DIALECT", "scenario_json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of one scenario file."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "qmpgmem scenario",
        **{key: value for key, value in schema.items() if key != "title"},
    }
