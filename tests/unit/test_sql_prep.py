"""``taskkit.core.sql.prep_all`` skips the field's conversion only where it would change nothing."""

import datetime
import uuid
import warnings

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from taskkit.core import sql
from taskkit.models import TaskAttempt, TaskRun

PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))
#: The last sample is naive: under USE_TZ the field warns and converts it.
SAMPLES = ["text", "", None, 0, 7, 1.5, True, {"a": 1}, [1, "x"], uuid.UUID(int=5),
           datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
           datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=PLUS_TWO),
           datetime.datetime(2026, 1, 2, 3, 4, 5)]  # fmt: skip


def same(got, expected):
    return type(got) is type(expected) and repr(got) == repr(expected)


@pytest.mark.parametrize("model", [TaskRun, TaskAttempt, TaskResult])
def test_prep_all_gives_what_each_field_would(model):
    checked = 0
    for field in model._meta.concrete_fields:
        for value in SAMPLES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a naive datetime under USE_TZ
                try:
                    expected = field.get_db_prep_save(value, connection)
                except Exception:  # a value the field refuses: not one prep_all is given
                    continue
                (got,) = sql.prep_all(model, "default", [(field.name, value)])
            assert same(got, expected), (field, value)
            checked += 1
    assert checked > 3 * len(model._meta.concrete_fields)


@pytest.mark.parametrize("model", [TaskRun, TaskAttempt, TaskResult])
def test_insert_statement_gives_what_save_would(model):
    """Every inserted value is what ``save()`` would send: each sample in every field that takes
    it, the others at their defaults."""
    checked = 0
    for value in SAMPLES:
        instance = model()
        if model is TaskAttempt:
            instance.run_id = uuid.UUID(int=9)
        for field in model._meta.concrete_fields:
            if not field.primary_key or model is TaskRun:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        field.get_db_prep_save(value, connection)
                except Exception:
                    continue
                setattr(instance, field.attname, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            text, params = sql.insert_statement("default", instance)
            with_pk = model._meta.auto_field is None or instance.pk is not None
            fields = [
                f for f in model._meta.concrete_fields
                if with_pk or f is not model._meta.auto_field
            ]  # fmt: skip
            expected = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
        assert text.startswith(f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)}")
        assert len(params) == len(expected) == text.count("%s")
        for field, got, want in zip(fields, params, expected, strict=True):
            if field.name in ("created_at", "date_created", "date_done"):  # auto_now: its time
                continue
            assert same(got, want), (model, field, value)
            checked += 1
    assert checked > len(SAMPLES)


@pytest.mark.parametrize("model", [TaskRun, TaskAttempt, TaskResult])
def test_new_instance_is_the_keyword_instance(model):
    """``new_instance`` gives what ``model(**values)`` gives: the values given, every other field
    at its default (a fresh list or dict for a JSON default, not a shared one)."""
    values = {"id": uuid.UUID(int=3)} if model is not TaskAttempt else {"run_id": uuid.UUID(int=3)}
    values["finished_at" if model is not TaskResult else "date_done"] = SAMPLES[10]
    built, expected = sql.new_instance(model, values), model(**values)
    for field in model._meta.concrete_fields:
        got, want = getattr(built, field.attname), getattr(expected, field.attname)
        if field.name == "id" and model is TaskRun and "id" not in values:
            continue
        assert same(got, want), field
    assert built._state.adding and built._state.db is None
    if model is TaskRun:
        assert built.args == [] and built.args is not sql.new_instance(model, {}).args


def test_new_instance_refuses_an_unknown_name():
    with pytest.raises(TypeError, match="TaskRun has no field colour"):
        sql.new_instance(TaskRun, {"task_name": "t", "colour": "red"})
