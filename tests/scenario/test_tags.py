"""``-m`` tag expressions: pytest's grammar over a scenario's tags."""

from __future__ import annotations

import pytest

from qmpgmem.scenario.tags import TagExpression, TagExpressionError


@pytest.mark.parametrize(
    ("expr", "tags", "selected"),
    [
        ("smoke", {"basic", "smoke"}, True),
        ("smoke", {"basic"}, False),
        ("not smoke", {"basic"}, True),
        ("basic and not smoke", {"basic", "smoke"}, False),
        ("conversion or kernel", {"kernel"}, True),
        ("conversion or kernel", {"basic"}, False),
        # and binds tighter than or
        ("a or b and c", {"a"}, True),
        ("a or b and c", {"b"}, False),
        ("(a or b) and c", {"a"}, False),
        ("(a or b) and c", {"b", "c"}, True),
        ("not not a", {"a"}, True),
        ("sev-snp", {"confidential", "sev-snp"}, True),
        ("vm_type:sw", {"vm_type:sw"}, True),
    ],
)
def test_expressions_select_like_pytest(expr: str, tags: set[str], selected: bool) -> None:
    assert TagExpression.parse(expr).matches(tags) is selected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "column 1: empty expression"),
        ("smoke and", "column 10: expected a tag, 'not' or '('"),
        ("(smoke", "column 7: expected ')'"),
        ("smoke basic", "column 7: unexpected 'basic'"),
        ("smoke & basic", "column 7: unexpected character '&'"),
        ("and smoke", "column 1: expected a tag, got 'and'"),
    ],
)
def test_bad_expressions_name_the_column(expr: str, message: str) -> None:
    with pytest.raises(TagExpressionError) as err:
        TagExpression.parse(expr)
    assert str(err.value) == message
