"""The shop's reliable tasks: charge (flaky gateway, idempotency key), e-mail, atomic invoice.

Placing an order dispatches ``charge_order``. Once the charge went through it dispatches the
confirmation e-mail and the invoice, each with its own idempotency key, so a charge attempt that
is retried after dispatching them does not dispatch them twice.
"""

import random

from django.core.mail import send_mail
from django.utils import timezone
from tenacity import retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from taskkit import current_run, reliable_task

from .gateway import GatewayError
from .gateway import charge as gateway_charge
from .models import Invoice, Order


@reliable_task(
    stop=stop_after_attempt(3),
    wait=wait_exponential_jitter(initial=0.5, max=5),
    retry=retry_if_exception_type(GatewayError),
    idempotency_key=lambda order, failure_rate=0.0: f"charge:{order.pk}",
)
def charge_order(order, failure_rate=0.0):
    run = current_run()
    # The same key on every attempt: the gateway applies the charge at most once.
    applied = gateway_charge(order, order.amount, run.key, failure_rate)
    Order.objects.filter(pk=order.pk, status=Order.Status.PLACED).update(
        status=Order.Status.PAID, paid_at=timezone.now()
    )
    send_confirmation.delay(order)
    create_invoice.delay(order, failure_rate)
    return {"charge": applied.pk, "order": order.reference, "attempt": run.attempt}


@reliable_task(
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=1, max=30),
    idempotency_key=lambda order: f"confirm:{order.pk}",
)
def send_confirmation(order):
    # Not atomic: the e-mail leaves the database. A worker dying between send and update could
    # send it twice; the conditional update keeps a finished order from being mailed again.
    if order.confirmed_at is not None:
        return {"sent": False}
    send_mail(
        f"Order {order.reference} confirmed",
        f"Thank you! We charged {order.amount} for {order.reference}.",
        "shop@example.com",
        [order.email],
    )
    Order.objects.filter(pk=order.pk, confirmed_at__isnull=True).update(
        status=Order.Status.CONFIRMED, confirmed_at=timezone.now()
    )
    return {"sent": True, "to": order.email}


@reliable_task(
    atomic=True,
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=0.5, max=5),
    idempotency_key=lambda order, failure_rate=0.0: f"invoice:{order.pk}",
)
def create_invoice(order, failure_rate=0.0):
    # atomic=True: the invoice row and SUCCEEDED commit together; a failure after the write
    # below rolls the write back, so the retry starts clean (no half-written invoice).
    invoice = Invoice.objects.create(
        order=order, number=f"INV-{order.pk:06d}", total=order.amount
    )
    if random.random() < failure_rate:
        raise RuntimeError("invoice printer jammed after writing (simulated)")
    return {"invoice": invoice.number}
