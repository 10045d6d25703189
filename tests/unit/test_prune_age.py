"""`taskkit_prune --older-than` ages: the accepted forms and the refused ones."""

import datetime

import pytest

from taskkit.management.commands.taskkit_prune import parse_age


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", datetime.timedelta(minutes=30)),
        ("12h", datetime.timedelta(hours=12)),
        ("7d", datetime.timedelta(days=7)),
        ("2w", datetime.timedelta(days=14)),
        ("45s", datetime.timedelta(seconds=45)),
        (" 3 d ", datetime.timedelta(days=3)),
    ],
)
def test_accepted_ages(text, expected):
    """Whole numbers with a unit s/m/h/d/w parse to that timedelta."""
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7days", "1.5h", "-3d", "0d", "7y", "7D"])
def test_refused_ages(text):
    """Anything else is refused with a message that shows the accepted forms."""
    with pytest.raises(ValueError, match=r"30m, 12h, 7d|positive"):
        parse_age(text)
