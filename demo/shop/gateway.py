"""A deliberately flaky fake payment gateway that honours idempotency keys.

Two kinds of failure, both driven by ``failure_rate``:

- an **outage** for that share of the orders (``in_outage``, decided by the order's pk, so every
  attempt of such an order meets it): its charge fails on every attempt the task's policy allows
  and the run ends FAILED, visible in the admin, until an operator retries it (the outage is over
  by then). With ``--failure-rate 0.2`` about 20% of the orders fail.
- **transient** failures of any order, at random: half before the charge is applied (the gateway
  was unreachable), half after (the response was lost). The caller retries with the same key;
  the charge is applied once per key, which is what a real payment API promises and what
  taskkit's ``current_run().key`` is for.
"""

from __future__ import annotations

import random
import zlib
from decimal import Decimal

from django.db.models import F

from .models import Charge, Order


class GatewayError(Exception):
    """The gateway did not answer (the charge may or may not have been applied)."""


def in_outage(order_pk: int, failure_rate: float) -> bool:
    """Whether the gateway is down for this order's first attempts: true for ``failure_rate`` of
    the orders, the same answer for every attempt of one order."""
    return zlib.crc32(f"outage:{order_pk}".encode()) / 2**32 < failure_rate


def charge(
    order: Order,
    amount: Decimal,
    idempotency_key: str,
    failure_rate: float,
    outage: bool = False,
) -> Charge:
    """Charge ``amount`` once per ``idempotency_key``; ``outage``: fail before charging."""
    if outage:
        raise GatewayError(
            f"payment gateway unavailable for {order.reference} (simulated outage: every attempt "
            "fails; retry the run from the admin once it is over)"
        )
    if random.random() < failure_rate / 4:
        raise GatewayError("payment gateway unreachable (simulated)")
    applied, created = Charge.objects.get_or_create(
        idempotency_key=idempotency_key, defaults={"order": order, "amount": amount}
    )
    if not created:  # a retry of a charge that went through: answer it, apply nothing
        Charge.objects.filter(pk=applied.pk).update(requests=F("requests") + 1)
    if random.random() < failure_rate / 4:
        raise GatewayError("payment gateway timed out after charging (simulated)")
    return applied
