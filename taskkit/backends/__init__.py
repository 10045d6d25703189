"""Django's task API (``django.tasks``, Django 6.0+) on taskkit's run ledger.

``TASKS = {"default": {"BACKEND": "taskkit.backends.TaskkitBackend", ...}}``; see
``docs/django-tasks.md``. On Django 5.2 importing this package raises ``DjangoTooOld``.
"""

# isort: off
from .requirement import REQUIRED_DJANGO, DjangoTooOld  # first: says why on Django 5.2
from .backend import TaskkitBackend
from .options import task_options
from .results import STATUS

# isort: on

__all__ = ["REQUIRED_DJANGO", "STATUS", "DjangoTooOld", "TaskkitBackend", "task_options"]
