"""The shipped migrations match the models (no drift, no settings baked into them)."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    """makemigrations --check finds nothing to do for taskkit."""
    call_command("makemigrations", "taskkit", "--check", "--dry-run", verbosity=0)
