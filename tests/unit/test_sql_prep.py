"""``taskkit.core.sql.prep_all`` skips the field's conversion only where it would change nothing."""

import datetime
import uuid

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from taskkit.core import sql
from taskkit.models import TaskAttempt, TaskRun

SAMPLES = ["text", "", None, 0, 7, 1.5, True, {"a": 1}, [1, "x"], uuid.UUID(int=5),
           datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)]  # fmt: skip


@pytest.mark.parametrize("model", [TaskRun, TaskAttempt, TaskResult])
def test_prep_all_gives_what_each_field_would(model):
    checked = 0
    for field in model._meta.concrete_fields:
        for value in SAMPLES:
            try:
                expected = field.get_db_prep_save(value, connection)
            except Exception:  # a value the field refuses: not one prep_all is given
                continue
            (got,) = sql.prep_all(model, "default", [(field.name, value)])
            assert type(got) is type(expected) and repr(got) == repr(expected), (field, value)
            checked += 1
    assert checked > 3 * len(model._meta.concrete_fields)
