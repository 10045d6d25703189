"""Filters for taskkit's admin templates: ``taskkit_item`` (a list's item by position)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def taskkit_item(items: Any, index: int) -> Any:
    """``items[index]``, or ``""`` when there is none (the run list's error rows)."""
    try:
        return items[index]
    except (IndexError, KeyError, TypeError):
        return ""
