"""A scenario written back as YAML, in the style of the hand-written files under scenarios/.

Why our own layout instead of a plain ``model_dump``: a shrunk scenario is read by people, so
sizes are spelt "4K"/"1M" where exact, ranges and expectations are one-line flow mappings,
defaults are left out and ``action`` comes first. Every file is checked by loading it back
(:func:`write_scenario`), so what ``qmpgmem run`` reads is the scenario that was run.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarint import HexInt

from qmpgmem.errors import QmpgmemError
from qmpgmem.scenario.loader import LoadedScenario, load_scenario
from qmpgmem.scenario.model import Scenario
from qmpgmem.scenario.units import format_size

__all__ = ["RoundTripError", "scenario_data", "scenario_yaml", "write_scenario"]

#: Sizes and offsets from here up without an exact K/M spelling are written in hex.
HEX_FROM: Final = 4096
_STEP_KEYS_FIRST: Final = ("action", "name", "range")
_TOP_KEYS: Final = (
    "name",
    "description",
    "requires",
    "tags",
    "vm",
    "steps",
    "timeouts",
    "expect_trace",
)


class RoundTripError(QmpgmemError):
    """A written scenario does not load back as the same scenario (a bug in the dumper)."""


def _size(value: int) -> int | str:
    """Spelt "4K" or "1M" when exact, else hex as reports print ranges (``m0[0x1000+0x20]``)."""
    text = format_size(value)
    if text != str(value):
        return text
    return value if value < HEX_FROM else HexInt(value)  # YAML 1.2 reads 0x.. as an int


def _range(data: dict[str, Any]) -> CommentedMap:
    out = CommentedMap()
    out["region"] = data["region"]
    out["offset"] = _size(data.get("offset", 0))
    out["size"] = _size(data["size"])
    out.fa.set_flow_style()
    return out


def _flow(data: dict[str, Any]) -> CommentedMap:
    out = CommentedMap(data)
    out.fa.set_flow_style()
    return out


def _step(data: dict[str, Any]) -> CommentedMap:
    out = CommentedMap()
    for key in (*_STEP_KEYS_FIRST, *data):
        if key not in data or key in out:
            continue
        value = data[key]
        if key == "range":
            value = _range(value)
        elif key == "expect" and isinstance(value, dict):
            convert = data["action"] == "guest.convert"
            value = _convert_expect(value) if convert else _flow(value)
        out[key] = value
    return out


def _convert_expect(value: dict[str, Any]) -> Any:
    if value.get("outcome", "ok") == "ok":
        return "ok"
    if value.get("code") is None:
        return "refused"
    return _flow({"refused": value["code"]})


def _vm(data: dict[str, Any]) -> CommentedMap:
    out = CommentedMap()
    for key, value in data.items():
        if key == "memory":
            seq = CommentedSeq()
            for region in value:
                r = CommentedMap()
                for rkey, rvalue in region.items():
                    gmem = region.get("backend") == "guest_memfd"
                    if rkey == "flavour" and rvalue == "auto" and gmem:
                        continue  # the default for guest_memfd; validation puts it back
                    r[rkey] = _size(rvalue) if rkey == "size" else rvalue
                seq.append(r)
            out[key] = seq
        else:
            out[key] = value
    return out


def scenario_data(scenario: Scenario) -> CommentedMap:
    """The scenario as ruamel mappings, defaults left out, in the order scenario files use."""
    raw = scenario.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    out = CommentedMap()
    for key in (*_TOP_KEYS, *raw):
        if key not in raw or key in out:
            continue
        value = raw[key]
        if key == "vm":
            value = _vm(value)
        elif key == "steps":
            value = CommentedSeq(_step(step) for step in value)
        elif key in ("requires", "tags"):
            value = _flow_seq(value)
        out[key] = value
    return out


def _flow_seq(items: Sequence[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def scenario_yaml(scenario: Scenario, header: Sequence[str] = ()) -> str:
    """YAML text of ``scenario``, ``header`` lines first as comments."""
    yaml = YAML(typ="rt")
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(scenario_data(scenario), buffer)
    lines = [f"# {line}".rstrip() for text in header for line in text.splitlines()]
    return "".join(f"{line}\n" for line in lines) + buffer.getvalue()


def write_scenario(path: Path, scenario: Scenario, header: Sequence[str] = ()) -> LoadedScenario:
    """Write ``scenario`` to ``path`` and load it back the way ``qmpgmem run`` does.

    :raise RoundTripError: the file loads as a different scenario.
    :raise InvalidScenarioError: the file does not validate (also a dumper bug).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scenario_yaml(scenario, header), encoding="utf-8")
    loaded = load_scenario(path)
    if loaded.scenario != scenario:
        raise RoundTripError(
            f"{path}: the written scenario loads back differently; this is a bug in "
            "qmpgmem.fuzz.dump"
        )
    return loaded
