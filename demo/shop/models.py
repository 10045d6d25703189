"""The demo shop's data: orders, the fake gateway's charges (by idempotency key), invoices."""

from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed", "placed"
        PAID = "paid", "paid"
        CONFIRMED = "confirmed", "confirmed (e-mail sent)"

    reference = models.CharField(max_length=32, unique=True)
    email = models.EmailField(default="customer@example.com")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.reference} ({self.amount}, {self.status})"


class Charge(models.Model):
    """What the fake payment gateway has applied: one row per idempotency key, never two."""

    idempotency_key = models.CharField(max_length=255, unique=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="charges")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)
    requests = models.PositiveIntegerField(default=1, help_text="Calls made with this key.")

    def __str__(self) -> str:
        return f"charge {self.idempotency_key}: {self.amount}"


class Invoice(models.Model):
    """Written by the atomic invoice task: all of it or nothing."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="invoice")
    number = models.CharField(max_length=32, unique=True)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.number
