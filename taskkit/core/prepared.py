"""The worker's hot-path statements, prepared once per database session (PostgreSQL).

Parsing and planning the claim and the statement that ends an attempt cost PostgreSQL as much
CPU as running them: measured here, 1.1 to 1.3 ms of server CPU per run sent as text, 0.7 ms
prepared. Django never prepares (client-side binding, ``prepare_threshold`` None), so this
module prepares in SQL: ``PREPARE <name> AS <text>`` once per database session, then
``EXECUTE <name>(%s, …)`` through Django's own cursor, so execute wrappers, the debug toolbar and
query counters still see every statement.

A name is ``taskkit_`` plus a digest of the text: one name always means one text, in every
process and every version, so two processes that share a server session (a transaction-pooling
proxy such as PgBouncer) can never run each other's statement under one name. A name the session
does not know (the proxy moved the connection to another server session, or reset it) is
prepared again and executed once more; if the name is unknown again, this process stops
preparing and sends the plain text from then on, with one warning. Inside a transaction (an
atomic task's end) the plain text is sent: a failed ``EXECUTE`` would abort the caller's
transaction. With Django's server-side binding (``OPTIONS["server_side_binding"]``) the plain
text is sent too (psycopg prepares it itself if ``prepare_threshold`` says so).
``TASKKIT_PREPARED_STATEMENTS = False`` sends the plain text everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connections

from .conf import settings

logger = logging.getLogger("taskkit.prepared")

#: SQLSTATEs of "this session has no prepared statement of that name" and "it has one already".
UNKNOWN_STATEMENT = "26000"
DUPLICATE_STATEMENT = "42P05"

_PLACEHOLDER = re.compile(r"%s")

#: Database aliases of which a session forgot a statement twice in a row: this process sends
#: them plain text (another database, not behind the proxy, keeps its prepared statements).
_given_up: set[str] = set()


@functools.lru_cache(maxsize=64)
def name_of(text: str) -> str:
    """The prepared statement's name for ``text``: the same in every process and version."""
    return "taskkit_" + hashlib.sha1(text.encode()).hexdigest()[:24]


def server_text(text: str) -> str:
    """``text`` with its ``%s`` placeholders numbered as PostgreSQL's ``$1``, ``$2``, …"""
    if "%%" in text:
        raise ValueError("a prepared statement's text may not hold a literal %")
    counter = iter(range(1, text.count("%s") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", text)


def fetchone(
    db: str, text: str, params: Sequence[Any], *, flush: bool = True
) -> tuple[Any, ...] | None:
    """Execute ``text`` (``%s`` placeholders, as Django's cursor takes them) with ``params`` on
    database ``db`` in autocommit, prepared where it can be; return its first row, if any.

    ``flush=False``: on PostgreSQL with psycopg 3 in autocommit, the statement commits without
    waiting for its WAL to reach the disk (``SET LOCAL synchronous_commit TO off``, in the same
    round trip): visible to every session at once, durable with the next flushed commit of any
    session (at the latest 3 x ``wal_writer_delay`` later). A server crash or crash-restart,
    an immediate shutdown or a failover in between loses it.
    """
    connection = connections[db]
    with connection.cursor() as cursor:
        usable = _client_bound_autocommit(connection, cursor)
        relaxed = not flush and usable and _can_relax(connection)
        if not (usable and _can_prepare(db)):
            return _run(cursor, connection, text, params, relaxed)
        name = name_of(text)
        arguments = f"({', '.join(['%s'] * len(params))})" if params else ""
        execute = f"EXECUTE {name}{arguments}"
        for attempt in (1, 2):
            known = _known(connection)
            if name not in known:
                _prepare(cursor, name, text)
                known.add(name)
            try:
                return _run(cursor, connection, execute, params or None, relaxed)
            except DatabaseError as exc:
                if _sqlstate(exc) != UNKNOWN_STATEMENT:
                    raise
                known.clear()  # the session is not the one these were prepared in
                if attempt == 2:
                    _give_up(db, name)
                    return _run(cursor, connection, text, params, relaxed)
    raise AssertionError("unreachable")  # pragma: no cover


#: What comes before and after a statement that commits without waiting for the WAL flush
#: (tools that sort statements by their text strip them).
RELAXED_PREFIX = "BEGIN; SET LOCAL synchronous_commit TO off; "
RELAXED_SUFFIX = "; COMMIT"


def _run(
    cursor: Any, connection: Any, text: str, params: Any, relaxed: bool
) -> tuple[Any, ...] | None:
    """One round trip: ``text``, alone or inside the relaxed transaction; its first row."""
    if not relaxed:
        cursor.execute(text, params)
        return cursor.fetchone()
    try:
        cursor.execute(RELAXED_PREFIX + text + RELAXED_SUFFIX, params)
    except BaseException:
        # The server abandoned the rest of the string: the session is inside a failed
        # transaction block until it is ended (a broken connection is Django's to replace).
        if connection.connection.info.transaction_status in _open_states():
            with contextlib.suppress(Exception):
                connection.connection.execute("ROLLBACK")
        raise
    while cursor.description is None:  # BEGIN and SET have no rows: the statement's result
        if not cursor.nextset():
            return None
    row: tuple[Any, ...] | None = cursor.fetchone()
    return row


@functools.cache
def _open_states() -> tuple[Any, ...]:
    """psycopg 3's "inside a transaction block" states; none without psycopg 3 (psycopg2 gives
    only a string's last result: no relaxed commits there). Imported when first needed, so a
    process on another database never loads psycopg."""
    try:
        from psycopg.pq import TransactionStatus
    except ImportError:  # pragma: no cover - psycopg 3 is what the postgres extra installs
        return ()
    return (TransactionStatus.INTRANS, TransactionStatus.INERROR)


def _binds_in_the_client(cursor: Any) -> bool:
    """The driver's cursor puts the parameters into the text itself: psycopg2's always, psycopg
    3's ``ClientCursor`` (Django's default; not with ``OPTIONS["server_side_binding"]`` or a
    ``cursor_factory`` of one's own). Otherwise parameters travel apart, and PostgreSQL refuses
    them in ``EXECUTE``'s argument list and in a string of several statements."""
    raw = getattr(cursor, "cursor", cursor)  # Django's wrapper around the driver's cursor
    if type(raw).__module__.partition(".")[0] == "psycopg2":
        return True
    try:
        from psycopg import ClientCursor
    except ImportError:  # pragma: no cover - neither driver: not PostgreSQL
        return False
    return isinstance(raw, ClientCursor)


def _client_bound_autocommit(connection: Any, cursor: Any) -> bool:
    """PostgreSQL in autocommit (an error would abort an open transaction), with a cursor that
    binds parameters in the client: what both preparing and relaxed claims need."""
    return (
        connection.vendor == "postgresql"
        and connection.get_autocommit()
        and not connection.in_atomic_block
        and _binds_in_the_client(cursor)
    )


def _can_relax(connection: Any) -> bool:
    """Several statements in one round trip, their results apart: psycopg 3 (given
    ``_client_bound_autocommit``)."""
    return type(connection.connection).__module__.partition(".")[0] == "psycopg"


def _can_prepare(db: str) -> bool:
    """Not given up on ``db``, not turned off (given ``_client_bound_autocommit``)."""
    return db not in _given_up and settings.PREPARED_STATEMENTS


def _known(connection: Any) -> set[str]:
    """The names prepared on ``connection``'s current database session (a new connection, after
    a reconnect, starts with none)."""
    raw = connection.connection
    held = connection.__dict__.get("_taskkit_prepared")
    if held is None or held[0] is not raw:
        held = connection.__dict__["_taskkit_prepared"] = (raw, set())
    names: set[str] = held[1]
    return names


def _prepare(cursor: Any, name: str, text: str) -> None:
    try:
        cursor.execute(f"PREPARE {name} AS {server_text(text)}")
    except DatabaseError as exc:
        if _sqlstate(exc) != DUPLICATE_STATEMENT:
            raise
        # The session has it already (prepared by this process through another connection, or
        # by another process sharing the session through a proxy): same name, same text.


def _give_up(db: str, name: str) -> None:
    _given_up.add(db)
    logger.warning(
        "taskkit: prepared statement %s was unknown to the session of database %r twice in a "
        "row: the connection goes through a transaction-pooling proxy (such as PgBouncer in "
        "transaction mode). This process sends that database's statements unprepared from now "
        "on; set TASKKIT_PREPARED_STATEMENTS = False to say so from the start.",
        name,
        db,
    )


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (psycopg 3's ``sqlstate``, psycopg2's ``pgcode``)."""
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)


def reset() -> None:
    """Forget that this process gave up preparing (tests)."""
    _given_up.clear()


__all__ = ["RELAXED_PREFIX", "RELAXED_SUFFIX", "fetchone", "name_of", "reset", "server_text"]
