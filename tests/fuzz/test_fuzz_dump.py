"""Generated scenarios as YAML: readable, accepted by ``qmpgmem validate``, loaded back equal."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qmpgmem.cli.group import cli
from qmpgmem.fuzz.dump import scenario_yaml, write_scenario
from qmpgmem.fuzz.generate import generate_scenario
from qmpgmem.fuzz.target import fuzz_target
from qmpgmem.runner import HostContext
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.scenario.model import Scenario


def _scenario(text_steps: list[dict[str, object]], memory: list[dict[str, object]]) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "dump-test",
            "description": "d",
            "vm": {"vm_type": "sw-protected", "memory": memory},
            "steps": text_steps,
        }
    )


def test_round_trip_of_many_generated_scenarios(
    tmp_path: Path, pvm_host: HostContext, hw_host: HostContext
) -> None:
    for host in (pvm_host, hw_host):
        for engine in ("qemu", "kvm"):
            target = fuzz_target(engine, host)
            for index in range(1, 41):
                sc = generate_scenario(target, 3, index, 15)
                loaded = write_scenario(tmp_path / f"{sc.name}.yaml", sc, ["a header"])
                assert loaded.scenario == sc
                assert len(loaded.step_lines) == len(sc.steps)
                assert loaded.text.startswith("# a header\n")


def test_layout_is_like_hand_written_files(tmp_path: Path) -> None:
    sc = _scenario(
        [
            {
                "action": "guest.write",
                "range": {"region": "g0", "offset": 4096, "size": 24},
                "seed": 5,
            },
            {
                "action": "guest.verify",
                "range": {"region": "g0", "offset": 0x12348, "size": 1 << 20},
                "expect": {"pattern": 5},
            },
            {"action": "host.read", "range": {"region": "g0", "size": 8}, "expect": "zero"},
            {
                "action": "guest.convert",
                "range": {"region": "g0", "size": 4096},
                "to": "private",
                "expect": {"refused": -1000},
            },
            {"action": "guest.convert", "range": {"region": "g0", "size": 4096}, "to": "shared"},
        ],
        [{"id": "g0", "size": 12 << 20, "backend": "guest_memfd", "gmem_flags": []}],
    )
    text = scenario_yaml(sc)
    assert "  - action: guest.write\n    range: {region: g0, offset: 4K, size: 24}\n" in text
    assert "range: {region: g0, offset: 0x12348, size: 1M}" in text
    assert "expect: {pattern: 5}" in text
    assert "expect: zero" in text
    assert "expect: {refused: -1000}" in text
    assert "flavour" not in text  # auto, the default for guest_memfd
    assert "gmem_flags: []" in text
    assert "size: 12M" in text
    path = tmp_path / "s.yaml"
    assert write_scenario(path, sc).scenario == sc


def test_validate_accepts_the_written_file(tmp_path: Path, pvm_host: HostContext) -> None:
    target = fuzz_target("kvm", pvm_host)
    paths = []
    for index in (1, 2, 3):
        sc = generate_scenario(target, 11, index)
        paths.append(tmp_path / f"{index}.yaml")
        write_scenario(paths[-1], sc, ["generated"])
    result = CliRunner().invoke(cli, ["validate", *map(str, paths)])
    assert result.exit_code == 0, result.output
    assert "3 scenarios valid" in result.output
    assert load_scenario(paths[0]).scenario.name == "fuzz-kvm-s11-1"
