"""A paginator for very large ledgers: no exact ``COUNT(*)`` of a whole table on PostgreSQL.

The admin counts the rows of the current filter to paginate. With a filter (state, task, date) the
count uses an index and stays cheap; without one, a count of millions of rows is a full scan, so on
PostgreSQL the planner's estimate (``pg_class.reltuples``, kept fresh by autovacuum) is used once
the table is past ``EXACT_UP_TO`` rows. Pagination then reads "about N"; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

#: Below this many estimated rows an exact count is cheap enough to always make.
EXACT_UP_TO = 50_000


class EstimatedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        estimate = self._estimate()
        if estimate is not None and estimate > EXACT_UP_TO:
            return estimate
        return super().count

    def _estimate(self) -> int | None:
        queryset: Any = self.object_list
        query = getattr(queryset, "query", None)
        if query is None or query.where or query.combinator or query.distinct:
            return None
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None
