"""The loader over mutated library scenarios (hypothesis): no traceback, no hang, bounded memory,
and every rejected file is rejected at a FILE:LINE.

bench/mutants.py runs 10,000 such files through ``qmpgmem validate``; this is the same property
on a few hundred, in the test suite, with hypothesis shrinking any failure to one mutation.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpgmem.scenario.loader import InvalidScenarioError, load_paths, load_scenario
from tests.scenario.mutate import mutate, shipped_scenarios

T = TypeVar("T")
SOURCES = shipped_scenarios()
DONORS = [text.encode() for _, text in SOURCES]
#: Per file: far above what any file takes (milliseconds), far below a hang.
TIME_BOUND = 5.0
MEMORY_BOUND = 64 << 20


class DataChooser:
    """Choices drawn by hypothesis, so a failure shrinks to fewer, smaller mutations."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, items: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(items))


def check_file(path: Path) -> None:
    """The property, for one file."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            load_scenario(path)
        except InvalidScenarioError as exc:
            assert exc.issues, "rejected without an issue"
            for issue in exc.issues:
                assert issue.type != "internal", str(issue)
                assert issue.file == path and issue.line is not None, str(issue)
                assert str(issue).startswith(f"{path}:{issue.line}:{issue.column}: "), str(issue)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < TIME_BOUND, f"{elapsed:.1f} s"
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_loader_survives_mutated_scenarios(tmp_path: Path, data: st.DataObject) -> None:
    name, text = data.draw(st.sampled_from(SOURCES), label="source")
    mutant = mutate(text.encode(), DataChooser(data), DONORS)
    path = tmp_path / name
    path.write_bytes(mutant)
    check_file(path)


def test_unmutated_sources_load() -> None:
    """The property's starting points are valid, as YAML and as JSON."""
    assert len(SOURCES) >= 2 * 30
    for name, text in SOURCES:
        assert text, name


def test_a_directory_of_mutants_reports_every_file(tmp_path: Path) -> None:
    """load_paths (what ``validate DIR`` runs) gets through a directory of broken files."""
    import random

    from tests.scenario.mutate import RandomChooser

    chooser = RandomChooser(random.Random(13))
    for index in range(60):
        name, text = SOURCES[index % len(SOURCES)]
        (tmp_path / f"{index:02}-{name}").write_bytes(mutate(text.encode(), chooser, DONORS))
    loaded, issues = load_paths([tmp_path])
    rejected = {issue.file for issue in issues if issue.type != "qmpgmem_duplicate"}
    assert len(loaded) + len(rejected) == 60
    assert all(issue.line is not None and issue.type != "internal" for issue in issues)


@pytest.mark.parametrize("rounds", [1])
def test_each_mutation_kind_alone(tmp_path: Path, rounds: int) -> None:
    """Every mutation, applied once to one source with fixed choices, keeps the property."""
    from tests.scenario.mutate import MUTATIONS

    class First:
        def integer(self, low: int, high: int) -> int:
            return (low + high) // 2

        def choice(self, items: Sequence[T]) -> T:
            return items[len(items) // 2]

    name, text = SOURCES[0]
    for index, mutation in enumerate(MUTATIONS):
        path = tmp_path / f"{index}-{name}"
        path.write_bytes(mutation(text.encode(), First()))
        check_file(path)
