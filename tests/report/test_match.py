import pytest

from qmpgmem.report.match import subset_mismatch


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ({}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1]}}, {"a": {"b": [3, 1]}}, True),
        ({"a": 1}, {"b": 1}, False),
        ([{"id": "m0"}], [{"id": "sys"}, {"id": "m0", "size": 4}], True),
        ([{"id": "m1"}], [{"id": "m0"}], False),
        ({"a": 1}, [1], False),
        ([1], {"a": 1}, False),
        ("x", "x", True),
    ],
)
def test_subset(expected: object, actual: object, ok: bool) -> None:
    assert (subset_mismatch(expected, actual) is None) is ok


def test_mismatch_names_the_path() -> None:
    why = subset_mismatch({"a": {"b": 1}}, {"a": {"b": 2}}, "return")
    assert why == "return.a.b: expected 1, got 2"
