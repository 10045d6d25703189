"""The shop page: place orders (one path rolls back to show nothing is sent) and watch them."""

import decimal

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from taskkit.models import TaskRun

from .models import Order
from .services import RolledBack, place_order
from .tasks import charge_order

CENT = decimal.Decimal("0.01")


def _failure_rate(text: str) -> float | None:
    try:
        rate = float(text)
    except ValueError:
        return None
    return rate if 0 <= rate <= 1 else None


@require_http_methods(["GET", "POST"])
def index(request):
    if request.method == "POST":
        try:
            amount = decimal.Decimal(request.POST.get("amount", "")).quantize(CENT)
        except decimal.InvalidOperation:
            amount = None
        rate = _failure_rate(request.POST.get("failure_rate", str(settings.DEMO_FAILURE_RATE)))
        if amount is None or not amount.is_finite() or not 0 < amount < 10**8 or rate is None:
            messages.error(
                request, "Enter an amount between 0.01 and 99999999.99 and a rate from 0 to 1."
            )
            return redirect("index")
        email = request.POST.get("email") or "customer@example.com"
        try:
            order, run_id = place_order(amount, email, rate, roll_back="roll_back" in request.POST)
        except RolledBack as exc:
            reference, run_id = exc.args
            left = TaskRun.objects.filter(pk=run_id).exists()
            messages.warning(
                request,
                f"Rolled back {reference}: the transaction failed after dispatching, so there is "
                f"no order, {'a run (BUG!)' if left else 'no run'} and no e-mail.",
            )
            return redirect("index")
        messages.success(request, f"Placed {order.reference}; charge run {run_id}.")
        return redirect("index")

    orders = list(Order.objects.select_related("invoice").all()[:50])
    runs = TaskRun.objects.filter(
        task_name=charge_order.name,
        idempotency_key__in=[f"charge:{order.pk}" for order in orders],
    )
    by_key = {run.idempotency_key: run for run in runs}
    for order in orders:
        order.run = by_key.get(f"charge:{order.pk}")
        order.invoice_number = getattr(getattr(order, "invoice", None), "number", "")
    return render(
        request,
        "shop/index.html",
        {"orders": orders, "failure_rate": settings.DEMO_FAILURE_RATE},
    )
