"""The operators' pages: the run list and detail (read-only), retry and discard actions, the
overview. Importing this package registers ``TaskRun`` and ``FailedRun`` with the admin site.
"""

from .options import FailedRunAdmin, TaskRunAdmin

__all__ = ["FailedRunAdmin", "TaskRunAdmin"]
