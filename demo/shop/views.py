"""The shop page: list orders and place one (the order and its task commit together)."""

import decimal
import secrets

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from taskkit.models import TaskRun

from .models import Order
from .tasks import confirm_order

CENT = decimal.Decimal("0.01")


@require_http_methods(["GET", "POST"])
def index(request):
    if request.method == "POST":
        try:
            amount = decimal.Decimal(request.POST.get("amount", "")).quantize(CENT)
        except decimal.InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or not 0 < amount < 10**8:
            messages.error(request, "Enter an amount between 0.01 and 99999999.99.")
            return redirect("index")
        with transaction.atomic():
            order = Order.objects.create(
                reference=f"ORD-{secrets.token_hex(4).upper()}", amount=amount
            )
            run = confirm_order.delay(order)  # published only if this transaction commits
        messages.success(request, f"Placed {order.reference}; confirmation run {run.id}.")
        return redirect("index")

    orders = list(Order.objects.all()[:50])
    runs = TaskRun.objects.filter(
        task_name=confirm_order.name,
        idempotency_key__in=[f"confirm:{order.pk}" for order in orders],
    )
    by_key = {run.idempotency_key: run for run in runs}
    for order in orders:
        order.run = by_key.get(f"confirm:{order.pk}")
    return render(request, "shop/index.html", {"orders": orders})
