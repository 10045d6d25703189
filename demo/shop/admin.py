"""Admin registration of the demo's orders, charges and invoices."""

from django.contrib import admin

from .models import Charge, Invoice, Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "email", "amount", "status", "created_at", "paid_at"]
    list_filter = ["status"]
    search_fields = ["reference", "email"]


@admin.register(Charge)
class ChargeAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "order", "amount", "requests", "created_at"]
    search_fields = ["idempotency_key"]


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["number", "order", "total", "created_at"]
