"""Single-statement forms of the hot-path transitions, for databases that can return rows.

The ORM spends two round trips where one statement does: a claim is ``UPDATE … RETURNING`` (the
run comes back with the claim; PostgreSQL, SQLite ≥ 3.35), and on PostgreSQL the success of an
attempt is one ``WITH … UPDATE … RETURNING`` + ``INSERT`` statement. Values are prepared and
converted by the models' own fields, exactly as the ORM does; ``taskkit.core.ledger`` falls back
to the ORM where these are not available.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import Field, Model


def can_return_from_update(db: str) -> bool:
    vendor = connections[db].vendor
    if vendor == "postgresql":
        return True
    return vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)


def can_update_and_insert_in_one(db: str) -> bool:
    return connections[db].vendor == "postgresql"


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def prep(model: type[Model], db: str, name: str, value: Any) -> Any:
    return _field(model, name).get_db_prep_save(value, connections[db])


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
    values = []
    for field, value in zip(model._meta.concrete_fields, row, strict=True):
        expression = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        for convert in converters:
            value = convert(value, expression, connection)
        values.append(value)
    return model.from_db(db, [f.attname for f in model._meta.concrete_fields], values)
