"""The business row a benchmark dispatch writes next to its run (created with --run-syncdb)."""

from django.db import models


class Item(models.Model):
    note = models.CharField(max_length=64)
