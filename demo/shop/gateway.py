"""A deliberately flaky fake payment gateway that honours idempotency keys.

``charge`` fails at random with ``failure_rate``: half of the failures happen before the charge
is applied (the gateway was unreachable), half after (the response was lost). Either way the
caller sees an error and retries with the same key; the charge is applied once per key, which
is what a real payment API promises and what taskkit's ``current_run().key`` is for.
"""

from __future__ import annotations

import random
from decimal import Decimal

from django.db.models import F

from .models import Charge, Order


class GatewayError(Exception):
    """The gateway did not answer (the charge may or may not have been applied)."""


def charge(order: Order, amount: Decimal, idempotency_key: str, failure_rate: float) -> Charge:
    if random.random() < failure_rate / 2:
        raise GatewayError("payment gateway unreachable (simulated)")
    applied, created = Charge.objects.get_or_create(
        idempotency_key=idempotency_key, defaults={"order": order, "amount": amount}
    )
    if not created:  # a retry of a charge that went through: answer it, apply nothing
        Charge.objects.filter(pk=applied.pk).update(requests=F("requests") + 1)
    if random.random() < failure_rate / 2:
        raise GatewayError("payment gateway timed out after charging (simulated)")
    return applied
