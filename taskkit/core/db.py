"""The database the run ledger lives on: where Django's routers send writes of ``TaskRun``."""

from __future__ import annotations

from django.db import router


def db_alias() -> str:
    """The alias of the ledger's database (``"default"`` unless a router says otherwise)."""
    from ..models import TaskRun  # models load after the app registry

    return router.db_for_write(TaskRun) or "default"


__all__ = ["db_alias"]
