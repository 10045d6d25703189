"""The demo's reliable task: confirm an order, at most once per order, retried on failure."""

from django.utils import timezone
from tenacity import stop_after_attempt, wait_exponential_jitter

from taskkit import current_run, reliable_task

from .models import Order


@reliable_task(
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=1, max=30),
    idempotency_key=lambda order: f"confirm:{order.pk}",
)
def confirm_order(order):
    # A conditional update: a repeated attempt leaves an already confirmed order alone.
    Order.objects.filter(pk=order.pk, status=Order.Status.PLACED).update(
        status=Order.Status.CONFIRMED, confirmed_at=timezone.now()
    )
    run = current_run()
    return {
        "order": order.pk,
        "reference": order.reference,
        "status": "confirmed",
        "attempt": run.attempt if run else 0,
    }
