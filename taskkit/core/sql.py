"""Single-statement forms of the hot-path transitions, for databases that can return rows.

The ORM spends two round trips where one statement does: a claim is ``UPDATE … RETURNING`` (the
run comes back with the claim; PostgreSQL, SQLite ≥ 3.35), and on PostgreSQL the success of an
attempt is one ``WITH … UPDATE … RETURNING`` + ``INSERT`` statement. Values are prepared and
converted by the models' own fields, exactly as the ORM does; ``taskkit.core.ledger`` falls back
to the ORM where these are not available.
"""

from __future__ import annotations

import datetime
import functools
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.db import connections, models
from django.db.models import Field, Model

_M = TypeVar("_M", bound=Model)


def can_return_from_update(db: str) -> bool:
    vendor = connections[db].vendor
    if vendor == "postgresql":
        return True
    return vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)


def can_update_and_insert_in_one(db: str) -> bool:
    return connections[db].vendor == "postgresql"


@functools.lru_cache(maxsize=512)
def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def prep_all(model: type[Model], db: str, values: Any) -> list[Any]:
    """Each ``(name, value)`` of ``values`` as its field saves it (``get_db_prep_save``), the
    connection looked up once. A value the field would pass through unchanged (a ``str`` for a
    text field, ``None`` for a field of Django's own that is not JSON) is not sent through it, and
    the commonest conversions are made directly (``_converter``: JSON, and SQLite's UUIDs and
    datetimes)."""
    connection = connections[db]
    plan = _prep_plan(model, connection.vendor)
    out = []
    for name, value in values:
        field, as_is, convert = plan[name]
        out.append(_prep(field, as_is, convert, value, connection))
    return out


def _prep(
    field: Field[Any, Any],
    as_is: tuple[type[Any], ...],
    convert: Converter | None,
    value: Any,
    connection: Any,
) -> Any:
    if _unchanged(as_is, value):
        return value
    if convert is not None:
        converted = convert(value, connection)
        if converted is not _SLOW:
            return converted
    return field.get_db_prep_save(value, connection)


def _unchanged(types: tuple[type[Any], ...], value: Any) -> bool:
    """``value`` is of a type its field stores as it is (``types``); a datetime only if aware."""
    kind = type(value)
    return kind in types and (kind is not _DATETIME or value.utcoffset() is not None)


_NONE = type(None)
#: Django's own field classes (exactly these, not subclasses) and the value types each stores
#: unchanged: ``get_db_prep_save`` returns such a value as it is, on every backend (not an
#: ``int``: on psycopg 3 an integer field wraps it in the column's type, ``Int4``).
_AS_IS: dict[type[Any], tuple[type[Any], ...]] = {
    models.CharField: (str, _NONE),
    models.TextField: (str, _NONE),
    models.IntegerField: (_NONE,),
    models.PositiveIntegerField: (_NONE,),
    models.FloatField: (float, _NONE),
    models.DateTimeField: (_NONE,),
    models.UUIDField: (_NONE,),
}
_DATETIME = datetime.datetime
#: PostgreSQL stores more as it is: a ``uuid.UUID`` (a native uuid column) and an aware
#: ``datetime`` (Django's operations return it unchanged; psycopg adapts it). A naive one goes
#: through the field, which warns under ``USE_TZ`` as ``save()`` does.
_AS_IS_POSTGRESQL: dict[type[Any], tuple[type[Any], ...]] = {
    **_AS_IS,
    models.DateTimeField: (_DATETIME, _NONE),
    models.UUIDField: (uuid.UUID, _NONE),
}


def _as_is(vendor: str) -> dict[type[Any], tuple[type[Any], ...]]:
    return _AS_IS_POSTGRESQL if vendor == "postgresql" else _AS_IS


#: ``convert(value, connection)``: what the field's ``get_db_prep_save`` returns for ``value``,
#: or ``_SLOW`` where it does not know (the field is asked then).
Converter = Callable[[Any, Any], Any]
_SLOW = object()


def _sqlite_uuid(value: Any, connection: Any) -> Any:
    """SQLite's ``UUIDField`` column holds the hex digits (Django: ``value.hex``)."""
    return value.hex if type(value) is uuid.UUID else _SLOW


def _sqlite_datetime(value: Any, connection: Any) -> Any:
    """An aware datetime, as Django's SQLite operations write it under ``USE_TZ``: made naive in
    the connection's time zone, as text (``adapt_datetimefield_value``)."""
    if type(value) is not _DATETIME or value.utcoffset() is None or not django_settings.USE_TZ:
        return _SLOW
    return str(value.astimezone(connection.timezone).replace(tzinfo=None))


def _json_value(value: Any, connection: Any) -> Any:
    """A list or dict in a ``JSONField`` without an encoder: what the backend adapts it to
    (``adapt_json_value``: text on SQLite, a ``Jsonb`` on PostgreSQL)."""
    if type(value) not in _JSON_CONTAINERS:
        return _SLOW
    return connection.ops.adapt_json_value(value, None)


_JSON_CONTAINERS = (dict, list)


def _converter(field: Field[Any, Any], vendor: str) -> Converter | None:
    """The direct conversion of ``field``'s values on ``vendor``, if there is one."""
    kind = type(field)
    if kind is models.JSONField and field.encoder is None:  # type: ignore[attr-defined]
        return _json_value
    if vendor != "sqlite":
        return None
    if kind is models.UUIDField:
        return _sqlite_uuid
    if kind is models.DateTimeField:
        return _sqlite_datetime
    return None


@functools.lru_cache(maxsize=64)
def _prep_plan(
    model: type[Model], vendor: str
) -> dict[str, tuple[Field[Any, Any], tuple[type[Any], ...], Converter | None]]:
    """Per field name (and attribute name) of ``model``: the field, the value types it stores as
    they are on ``vendor``, and its direct conversion there."""
    as_is = _as_is(vendor)
    plan = {}
    for field in model._meta.concrete_fields:
        assert isinstance(field, Field)
        entry = (field, as_is.get(type(field), ()), _converter(field, vendor))
        plan[field.name] = plan[field.attname] = entry
    return plan


def column(model: type[Model], db: str, name: str) -> str:
    return quote(db, _field(model, name).column)


def quote(db: str, name: str | None) -> str:
    assert name is not None
    return str(connections[db].ops.quote_name(name))


def table(model: type[Model], db: str) -> str:
    return str(connections[db].ops.quote_name(model._meta.db_table))


def returning_columns(model: type[Model], db: str) -> str:
    return ", ".join(quote(db, f.column) for f in model._meta.concrete_fields)


def instance_from_row(model: type[Model], db: str, row: Sequence[Any]) -> Any:
    """Build a model instance from a row of ``returning_columns``, converting values as the ORM
    compiler does (e.g. SQLite datetimes and UUIDs, JSON)."""
    connection = connections[db]
    names, converters = _converters(model, connection)
    values = list(row)
    for index, expression, convert in converters:
        values[index] = convert(values[index], expression, connection)
    return model.from_db(db, names, values)


def _converters(model: type[Model], connection: Any) -> tuple[list[str], list[Any]]:
    """The attribute names of ``model``'s concrete fields and, for ``connection``, the converters
    the ORM's compiler applies to each column read: ``(column index, expression, converter)``.
    Computed once per model and connection (a worker reads every claimed run through it)."""
    cache = connection.__dict__.setdefault("_taskkit_converters", {})
    found = cache.get(model)
    if found is None:
        converters = []
        for index, field in enumerate(model._meta.concrete_fields):
            expression = field.get_col(model._meta.db_table)
            for convert in connection.ops.get_db_converters(
                expression
            ) + expression.get_db_converters(connection):
                converters.append((index, expression, convert))
        found = cache[model] = ([f.attname for f in model._meta.concrete_fields], converters)
    return found


def _attempt_fields(model: type[Model], skip: str) -> list[Field[Any, Any]]:
    """The concrete fields of ``model`` but its primary key and ``skip``."""
    return [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and f.name != skip and isinstance(f, Field)
    ]


@functools.lru_cache(maxsize=64)
def _insert_text(db: str, model: type[Model], with_pk: bool) -> str:
    fields = _inserted_fields(model, with_pk)
    columns = ", ".join(quote(db, f.column) for f in fields)
    return f"INSERT INTO {table(model, db)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"


def _inserted_fields(model: type[Model], with_pk: bool) -> list[Field[Any, Any]]:
    """The concrete fields an insert names: all of them, or all but an automatic primary key
    the database numbers (an attempt's ``id``)."""
    auto = model._meta.auto_field
    return [f for f in model._meta.concrete_fields if with_pk or f is not auto]


def insert_statement(db: str, instance: Model) -> tuple[str, list[Any]]:
    """``INSERT`` of ``instance`` (an automatic primary key left to the database when unset), its
    values prepared as ``save()`` prepares them (``auto_now_add`` filled in on the instance), in
    one cached text: an insert without the ORM's per-call compilation."""
    model = type(instance)
    connection = connections[db]
    with_pk = model._meta.auto_field is None or instance.pk is not None
    params = []
    for field, attname, as_is, convert, own_pre_save in _insert_plan(
        model, with_pk, connection.vendor
    ):
        value = field.pre_save(instance, True) if own_pre_save else getattr(instance, attname)
        params.append(_prep(field, as_is, convert, value, connection))
    return _insert_text(db, model, with_pk), params


@functools.lru_cache(maxsize=64)
def _insert_plan(
    model: type[Model], with_pk: bool, vendor: str
) -> list[tuple[Any, str, Any, Converter | None, bool]]:
    """Per inserted field: the field, its attribute, the value types it stores as they are on
    ``vendor``, its direct conversion there, and whether its ``pre_save`` does more than read the
    attribute (``auto_now_add``)."""
    plan = _prep_plan(model, vendor)
    return [
        (f, f.attname, *plan[f.name][1:], _own_pre_save(f))
        for f in _inserted_fields(model, with_pk)
    ]


def _own_pre_save(field: Field[Any, Any]) -> bool:
    """Whether ``field.pre_save`` may do more than read the attribute: Django's own date fields
    only with ``auto_now`` / ``auto_now_add``."""
    if type(field) in (models.DateTimeField, models.DateField):
        return bool(field.auto_now or field.auto_now_add)  # type: ignore[attr-defined]
    return type(field).pre_save is not Field.pre_save


def new_instance(model: type[_M], values: dict[str, Any]) -> _M:
    """``model(**values)`` (values by attribute name), built the way Django builds a row it read:
    every field's value in order, a missing one at its field's default. The same instance, without
    the keyword path's per-field lookups (a dispatch builds one per run)."""
    args = []
    found = 0
    for attname, default in _defaults(model):
        if attname in values:
            args.append(values[attname])
            found += 1
        else:
            args.append(default())
    if found != len(values):
        known = {attname for attname, _ in _defaults(model)}
        unknown = sorted(set(values) - known)
        raise TypeError(f"{model.__name__} has no field {', '.join(unknown)}")
    return model(*args)


@functools.lru_cache(maxsize=64)
def _defaults(model: type[Model]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    return tuple((f.attname, f.get_default) for f in model._meta.concrete_fields)


Upsert = tuple[type[Model], dict[str, Any], tuple[str, ...], str]


@functools.lru_cache(maxsize=256)
def _upsert_text(
    db: str,
    model: type[Model],
    names: tuple[str, ...],
    insert_only: tuple[str, ...],
    key: str,
    source: str,
) -> str:
    columns = ", ".join(column(model, db, name) for name in names)
    placeholders = ", ".join(["%s"] * len(names))
    updates = ", ".join(
        f"{column(model, db, name)} = EXCLUDED.{column(model, db, name)}"
        for name in names
        if name not in insert_only
    )
    select = f"SELECT {placeholders} FROM {source}" if source else f"VALUES ({placeholders})"
    return (
        f"INSERT INTO {table(model, db)} ({columns}) {select} "
        f"ON CONFLICT ({column(model, db, key)}) DO UPDATE SET {updates}"
    )


def upsert_statement(
    db: str,
    model: type[Model],
    values: dict[str, Any],
    insert_only: tuple[str, ...],
    key: str,
    source: str = "",
) -> tuple[str, list[Any]]:
    """``INSERT … ON CONFLICT (key) DO UPDATE`` of one row of ``model`` (``values`` by field
    name); the fields of ``insert_only`` keep the value of an existing row. With ``source`` (a
    CTE's name) the row is inserted once per row of ``source``: none if it is empty."""
    names = tuple(values)
    statement = _upsert_text(db, model, names, tuple(insert_only), key, source)
    return statement, prep_all(model, db, values.items())


@functools.lru_cache(maxsize=256)
def _finish_text(
    db: str,
    model: type[Model],
    changes: tuple[str, ...],
    held: tuple[str, ...],
    attempt_model: type[Model],
    upsert: tuple[Any, ...] | None,
) -> str:
    update = _update_text(db, model, changes, held)
    pk = column(model, db, "id")
    fk = _foreign_key(attempt_model, model)
    fields = _attempt_fields(attempt_model, fk.name)
    attempt_columns = ", ".join(quote(db, f.column) for f in fields)
    insert_attempt = (
        f"INSERT INTO {table(attempt_model, db)} ({quote(db, fk.column)}, {attempt_columns}) "
        f"SELECT won.{pk}, {', '.join(['%s'] * len(fields))} FROM won"
    )
    statement = f"WITH won AS ({update} RETURNING {pk}) "
    if upsert is None:
        return statement + insert_attempt + " RETURNING 1"
    row_statement = _upsert_text(db, *upsert, source="won")
    return statement + f", attempt AS ({insert_attempt}) {row_statement} RETURNING 1"


@functools.lru_cache(maxsize=256)
def _update_text(
    db: str, model: type[Model], changes: tuple[str, ...], held: tuple[str, ...]
) -> str:
    sets = ", ".join(f"{column(model, db, name)} = %s" for name in changes)
    where = " AND ".join(f"{_opaque(model, db, name)} = %s" for name in held)
    return f"UPDATE {table(model, db)} SET {sets} WHERE {where}"


def update_statement(
    db: str, model: type[Model], changes: dict[str, Any], held: dict[str, Any]
) -> tuple[str, list[Any]]:
    """``UPDATE`` of the row that still matches ``held`` (its primary key among them) with
    ``changes``, in a text built once per shape: the ORM's ``filter(**held).update(**changes)``
    without its per-call compilation."""
    statement = _update_text(db, model, tuple(changes), tuple(held))
    return statement, prep_all(model, db, changes.items()) + prep_all(model, db, held.items())


def _opaque(model: type[Model], db: str, name: str) -> str:
    """Column ``name`` as a condition the planner cannot serve from an index, unless it is the
    primary key: an attempt ends by primary key, never by walking the index of its state (which
    a backlog's dead rows make long; PostgreSQL chose it, measured)."""
    field = _field(model, name)
    if field.primary_key:
        return column(model, db, name)
    if field.get_internal_type() in ("CharField", "TextField"):
        return f"{column(model, db, name)} || ''"
    if field.get_internal_type() in ("IntegerField", "PositiveIntegerField", "BigIntegerField"):
        return f"{column(model, db, name)} + 0"
    return column(model, db, name)


def _foreign_key(model: type[Model], to: type[Model]) -> Field[Any, Any]:
    return next(
        f
        for f in model._meta.concrete_fields
        if getattr(f, "related_model", None) is to and isinstance(f, Field)
    )


def finish_statement(
    db: str,
    model: type[Model],
    changes: dict[str, Any],
    held: dict[str, Any],
    attempt: Model,
    upsert: Upsert | None,
) -> tuple[str, list[Any]]:
    """PostgreSQL: one statement that ends an attempt. It updates the run (``changes``) where it
    still matches ``held`` (the claim), inserts ``attempt`` (its foreign key to the run taken
    from the update) and, with ``upsert``, upserts a result row; none of the inserts happen if
    the claim was lost. A row comes back if and only if the claim was held. The text is built
    once per shape of the statement."""
    shape = None
    if upsert is not None:
        row_model, values, insert_only, key = upsert
        shape = (row_model, tuple(values), tuple(insert_only), key)
    attempt_model = type(attempt)
    statement = _finish_text(db, model, tuple(changes), tuple(held), attempt_model, shape)
    params = prep_all(model, db, changes.items())
    params += prep_all(model, db, held.items())
    fk = _foreign_key(attempt_model, model)
    params += prep_all(
        attempt_model,
        db,
        [(f.name, getattr(attempt, f.attname)) for f in _attempt_fields(attempt_model, fk.name)],
    )
    if upsert is not None:
        params += prep_all(upsert[0], db, upsert[1].items())
    return statement, params
