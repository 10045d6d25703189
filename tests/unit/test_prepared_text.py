"""The pure pieces of ``taskkit.core.prepared``: a statement's name and its server-side text."""

import pytest

from taskkit.core import prepared


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT %s", "SELECT $1"),
        ("UPDATE t SET a = %s WHERE b = %s AND c IN (%s, %s)",
         "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)"),
    ],
)  # fmt: skip
def test_server_text_numbers_the_placeholders(text, expected):
    assert prepared.server_text(text) == expected


def test_a_name_is_one_text():
    assert prepared.name_of("SELECT %s") == prepared.name_of("SELECT %s")
    assert prepared.name_of("SELECT %s") != prepared.name_of("SELECT %s + 1")
    assert len(prepared.name_of("x")) <= 63  # PostgreSQL's identifier limit
    with pytest.raises(ValueError, match="literal %"):
        prepared.server_text("SELECT '100%%'")
