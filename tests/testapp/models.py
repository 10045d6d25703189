"""Models the test tasks act on. ``Effect`` is the witness: one row per applied effect."""

from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    note = models.CharField(max_length=255, blank=True, default="")


class Effect(models.Model):
    """Written by test tasks; counting rows counts executions that took effect."""

    kind = models.CharField(max_length=64)
    run_id = models.CharField(max_length=64, blank=True, default="")
    attempt = models.IntegerField(default=0)
    payload = models.JSONField(default=dict)
    pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
