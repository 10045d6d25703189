"""Placing an order: the order row and its charge run commit together, or neither does."""

from __future__ import annotations

import decimal
import secrets

from django.db import transaction

from .models import Order
from .tasks import charge_order


class RolledBack(Exception):
    """Raised inside the order's transaction to show that a rollback sends nothing."""


def place_order(
    amount: decimal.Decimal, email: str, failure_rate: float, roll_back: bool = False
) -> tuple[Order, str]:
    """Create the order and dispatch its charge; return (order, charge run id)."""
    with transaction.atomic():
        order = Order.objects.create(
            reference=f"ORD-{secrets.token_hex(4).upper()}", amount=amount, email=email
        )
        run = charge_order.delay(order, failure_rate)  # published only if this commits
        if roll_back:
            raise RolledBack(order.reference, run.id)
    return order, run.id
