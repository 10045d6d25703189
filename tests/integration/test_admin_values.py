"""The run admin renders every stored value: lone surrogates, NUL, deep nesting, malformed tags.

Rows like these were written before dispatch checked values, by adoption, or by hand; the run's
page must still open (it used to answer 500), escaped, with nesting cut at MAX_DEPTH levels.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from taskkit.core.serialization import MAX_DEPTH, TAG
from taskkit.models import RunState, TaskRun

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

SCRIPT = "<script>alert('x')</script>"


def deep(levels: int, leaf: Any = SCRIPT) -> Any:
    value: Any = leaf
    for _ in range(levels):
        value = {"k": [value]}
    return value


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))


STORED = [
    # (args, kwargs, text the page must show)
    pytest.param([deep(400)], {}, f"nested deeper than {MAX_DEPTH} levels", id="deep-nesting"),
    pytest.param(
        [deep(MAX_DEPTH // 2 - 1)], {}, "&lt;script&gt;", id="nesting-within-the-limit-shown"
    ),
    pytest.param(
        [{TAG: "timedelta", "days": "x"}], {}, "&quot;days&quot;", id="malformed-timedelta"
    ),
    pytest.param([{TAG: "model", "model": ["x"], "pk": {}}], {}, "__taskkit__", id="bad-ref"),
    pytest.param([{TAG: "decimal", "value": [SCRIPT]}], {}, "&lt;script&gt;", id="tag-holds-list"),
    pytest.param(
        [{TAG: "model", "model": "testapp.Order", "pk": SCRIPT}], {}, "testapp.Order #&lt;", id="r"
    ),
    pytest.param([10**200], {}, "1" + "0" * 200, id="huge-int"),
]
SQLITE_ONLY = [  # PostgreSQL's jsonb refuses these values, so no row can hold them there
    pytest.param(["lone \udc80 surrogate"], {}, "lone \\udc80 surrogate", id="surrogate"),
    pytest.param([], {"\ud800key": "a\x00b"}, "\\ud800key", id="surrogate-key-and-nul"),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "shown"),
    STORED + ([] if connection.vendor == "postgresql" else SQLITE_ONLY),
)
def test_the_run_page_renders_any_stored_value(client, operator, args, kwargs, shown):
    run = TaskRun.objects.create(
        task_name="shop.charge", state=RunState.FAILED, args=args, kwargs=kwargs
    )
    response = client.get(reverse("admin:taskkit_taskrun_change", args=[run.pk]))
    assert response.status_code == 200
    page = response.content.decode("utf-8")
    assert shown in page
    assert SCRIPT not in page  # escaped, never marked safe
