"""The operators' pages: the run list and detail (read-only, with the operator buttons), retry,
discard, cancel and requeue actions, the pauses, the overview. Importing this package registers
``TaskRun``, ``FailedRun`` and ``TaskPause`` with the admin site.
"""

from .options import FailedRunAdmin, TaskRunAdmin
from .pauses import TaskPauseAdmin

__all__ = ["FailedRunAdmin", "TaskPauseAdmin", "TaskRunAdmin"]
