"""The run lists' search box: what a term means (``parse``, pure) and its filter (``filter_for``).

One term, with an optional prefix saying what it is::

    3f2a9c1e                 a run id, or the start of one (4+ hex digits; hyphens allowed)
    key:order-42             an idempotency key (exact)
    error:card declined      text in the last error's message (case-insensitive)
    class:CardDeclined       the last error's class: its name or full path
    arg:42                   a positional argument's value (JSON; bare text is a string)
    arg:order_id=42          a keyword argument's value; a model argument matches by its pk
    task:billing             text in the task name

Without a prefix a hex term (4 to 32 digits) looks in run ids and idempotency keys; any other
term in the idempotency key, the task name and the last error's message at once. Task names are
matched among the names there are (the task filter's choices), so the database gets an indexed
``task_name IN (…)`` rather than a scan.

Arguments are matched by **JSON containment** on PostgreSQL (``args @> '[42]'``, indexed by the
GIN indexes of migration 0005) and with ``json_each`` / ``json_extract`` on SQLite; on other
databases by Django's ``contains`` lookup where the backend has it, else not at all (the search
says so). A value also matches as text (``arg:42`` finds ``42`` and ``"42"``) and as the pk of a
model argument. Values of arguments marked sensitive (``sensitive=`` on the task) are never
matched: a run whose call put a sensitive value where the search looks is left out (scrubbed runs
hold only the ``redacted`` marker anyway).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.expressions import RawSQL

from ..core.redaction import SPEC
from .distinct import distinct_values

KINDS = ("id", "key", "error", "class", "arg", "task", "any")
_HEX = re.compile(r"^[0-9a-fA-F-]+$")
#: A shorter hex term is not taken for a run id (it would be a key or a word).
MIN_ID_PREFIX = 4


class SearchError(ValueError):
    """A search term that cannot be searched; the message says how to write it."""


@dataclass(frozen=True)
class Search:
    kind: str
    text: str
    #: For ``arg``: the keyword's name, or ``None`` for a positional value.
    name: str | None = None

    @property
    def id_range(self) -> tuple[uuid.UUID, uuid.UUID] | None:
        """The smallest and largest run ids starting with the hex digits of ``text``."""
        digits = self.text.replace("-", "").lower()
        if len(digits) < MIN_ID_PREFIX or len(digits) > 32 or not _HEX.match(self.text):
            return None
        return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))

    @property
    def values(self) -> list[Any]:
        """The JSON values an ``arg`` term matches: as written, and as text."""
        try:
            value = json.loads(self.text)
        except ValueError:
            return [self.text]
        found = [value]
        if (
            not isinstance(value, str)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            found.append(self.text)
        return found


def parse(term: str) -> Search | None:
    """What ``term`` asks for; ``None`` for an empty one. Raises ``SearchError`` for a prefix
    with nothing after it."""
    term = term.strip()
    if not term:
        return None
    prefix, sep, rest = term.partition(":")
    prefix = prefix.strip().lower()
    if sep and prefix in {"id", "key", "error", "class", "arg", "task"}:
        rest = rest.strip()
        if not rest:
            raise SearchError(f"nothing after {prefix}: (write e.g. {prefix}:{_EXAMPLES[prefix]})")
        if prefix == "arg":
            name, eq, value = rest.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
                return Search("arg", value.strip(), name.strip())
            return Search("arg", rest)
        if prefix == "id" and Search("id", rest).id_range is None:
            raise SearchError(
                f"{rest!r} is not the start of a run id: give {MIN_ID_PREFIX} to 32 hex digits"
            )
        return Search(prefix, rest)
    return Search("any", term)


_EXAMPLES = {
    "id": "3f2a9c1e",
    "key": "order-42",
    "error": "card declined",
    "class": "ValueError",
    "arg": "order_id=42",
    "task": "billing",
}


def _raw(sql: str, params: list[Any]) -> Q:
    return Q(ExpressionWrapper(RawSQL(sql, params), output_field=BooleanField()))


def _error_text(queryset: QuerySet[Any], text: str) -> Q:
    """Case-insensitive substring of the last error's message (trigram-indexed on PostgreSQL:
    ``ILIKE`` on the column itself, with the partial index's predicate)."""
    if connections[queryset.db].vendor == "postgresql":
        table = connections[queryset.db].ops.quote_name(queryset.model._meta.db_table)
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return _raw(f"{table}.error_message ILIKE %s", [pattern]) & ~Q(error_type="")
    return Q(error_message__icontains=text) & ~Q(error_type="")


def _error_class(text: str) -> Q:
    if "." in text:
        return Q(error_type=text)
    return Q(error_type=text) | Q(error_type__endswith=f".{text}")


def _candidates(values: list[Any], name: str | None) -> list[str]:
    """JSON documents whose containment finds the values: the value itself and a model
    reference with it as pk."""
    docs = []
    for value in values:
        for item in (value, {"pk": value}):
            docs.append(json.dumps({name: item} if name is not None else [item]))
    return docs


def _arguments(queryset: QuerySet[Any], search: Search) -> Q:
    connection = connections[queryset.db]
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    name = search.name
    if connection.vendor == "postgresql":
        column = "kwargs" if name is not None else "args"
        docs = _candidates(search.values, name)
        match = " OR ".join(f"{table}.{column} @> %s::jsonb" for _ in docs)
        if name is not None:
            guard = (
                f"NOT COALESCE({table}.options -> '{SPEC}' -> 'kwargs', '[]'::jsonb) "
                "@> jsonb_build_array(%s::text)"
            )
            return _raw(f"({match}) AND {guard}", [*docs, name])
        # A positional match counts only at a position that is not sensitive.
        exact = " OR ".join("e.value = %s::jsonb OR e.value @> %s::jsonb" for _ in search.values)
        precise = (
            f"({table}.options -> '{SPEC}') IS NULL OR EXISTS (SELECT 1 FROM "
            f"jsonb_array_elements({table}.args) WITH ORDINALITY AS e(value, n) WHERE ({exact}) "
            f"AND NOT COALESCE({table}.options -> '{SPEC}' -> 'args', '[]'::jsonb) "
            "@> jsonb_build_array(e.n - 1))"
        )
        params = [p for v in search.values for p in (json.dumps(v), json.dumps({"pk": v}))]
        return _raw(f"({match}) AND ({precise})", [*docs, *params])
    if connection.vendor == "sqlite":
        scalars = [v for v in search.values if not isinstance(v, dict | list)]
        if not scalars:
            raise SearchError("on SQLite an argument search takes a single value, not JSON")
        marks = ", ".join("%s" for _ in scalars)
        if name is not None:
            path = "$." + json.dumps(name)
            return _raw(
                f"(json_extract({table}.kwargs, %s) IN ({marks}) OR "
                f"json_extract({table}.kwargs, %s) IN ({marks})) AND NOT EXISTS (SELECT 1 FROM "
                f"json_each({table}.options, '$.{SPEC}.kwargs') s WHERE s.value = %s)",
                [path, *scalars, path + ".pk", *scalars, name],
            )
        return _raw(
            f"EXISTS (SELECT 1 FROM json_each({table}.args) e WHERE (e.value IN ({marks}) OR "
            f"CASE WHEN e.type = 'object' THEN json_extract(e.value, '$.pk') END IN ({marks})) "
            "AND e.key NOT IN (SELECT s.value FROM "
            f"json_each({table}.options, '$.{SPEC}.args') s))",
            [*scalars, *scalars],
        )
    if not connection.features.supports_json_field_contains:
        raise SearchError(f"argument search is not available on {connection.vendor}")
    # Elsewhere: containment, leaving out every run that has a live sensitive argument.
    field = "kwargs" if name is not None else "args"
    contained = Q()
    for value in search.values:
        for item in (value, {"pk": value}):
            doc = {name: item} if name is not None else [item]
            contained |= Q(**{f"{field}__contains": doc})
    return contained & ~Q(**{"options__has_key": SPEC})


def _task_names(queryset: QuerySet[Any], text: str, names: list[str] | None) -> Q:
    """Task names containing ``text`` (any case), as an indexed ``IN``: the names come from the
    task filter's choices when given (no extra query), else from the index walk."""
    if names is None:
        names = distinct_values(queryset, "task_name")
    wanted = text.casefold()
    return Q(task_name__in=[name for name in names if wanted in name.casefold()])


def filter_for(queryset: QuerySet[Any], search: Search, task_names: list[str] | None = None) -> Q:
    """The filter of a parsed search on a queryset of runs (``task_names``: the task names
    there are, if the caller knows them)."""
    if search.kind == "id":
        low, high = search.id_range or (None, None)
        return Q(pk__gte=low, pk__lte=high)
    if search.kind == "key":
        return Q(idempotency_key=search.text)
    if search.kind == "error":
        return _error_text(queryset, search.text)
    if search.kind == "class":
        return _error_class(search.text)
    if search.kind == "arg":
        return _arguments(queryset, search)
    if search.kind == "task":
        return _task_names(queryset, search.text, task_names)
    id_range = Search("id", search.text).id_range
    if id_range is not None:  # hex: a run id (or its start), or a key made of hex
        return Q(pk__gte=id_range[0], pk__lte=id_range[1]) | Q(idempotency_key=search.text)
    found = Q(idempotency_key=search.text) | _task_names(queryset, search.text, task_names)
    return found | _error_text(queryset, search.text)
