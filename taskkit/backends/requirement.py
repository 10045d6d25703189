"""The Django version the backend needs: importing ``taskkit.backends`` on an older one raises.

Django's task framework (``django.tasks``) arrived in Django 6.0 (which needs Python ≥ 3.12).
``taskkit.backends`` imports this module first, so on Django 5.2 the import fails at once with
``DjangoTooOld``, which says what to do, rather than with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import django
from django.core.exceptions import ImproperlyConfigured

#: The first Django with ``django.tasks``.
REQUIRED_DJANGO = (6, 0)


class DjangoTooOld(ImproperlyConfigured, ImportError):
    """taskkit.backends needs Django's task framework (django.tasks), added in Django 6.0."""


def require_django() -> None:
    """Raise ``DjangoTooOld`` unless this Django has ``django.tasks``."""
    if django.VERSION[:2] < REQUIRED_DJANGO:
        raise DjangoTooOld(
            "taskkit.backends.TaskkitBackend needs Django's task framework (django.tasks), "
            f"added in Django 6.0; this project runs Django {django.get_version()}. Upgrade to "
            "Django >= 6.0 (it needs Python >= 3.12), or declare tasks with "
            "taskkit.reliable_task, which works on Django 5.2."
        )


require_django()
