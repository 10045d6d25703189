"""The admin page of pauses: which tasks and queues are paused, by whom, since when and why;
pause one (the add form) or resume the selected (the list action). Gated by ``pause_taskrun``;
both go through ``taskkit.core.control`` and are written to the admin log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ..core import control
from ..models import PauseKind, TaskPause

PERMISSION = "taskkit.pause_taskrun"


class TaskPauseAdmin(admin.ModelAdmin):
    list_display = ["kind", "name", "paused_at", "paused_by", "reason"]
    list_filter = ["kind"]
    ordering = ["-paused_at"]
    fields = ["kind", "name", "reason"]
    actions = ["resume_selected"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(
            request.user.has_perm("taskkit.view_taskrun") or request.user.has_perm(PERMISSION)
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(PERMISSION))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(PERMISSION))

    def save_model(self, request: HttpRequest, obj: TaskPause, form: Any, change: bool) -> None:
        """Pause through ``taskkit.core.control`` (a second pause of the same name keeps the
        first); ``obj`` is then the stored row, for the admin's log entry and redirect."""
        pause = control.pause_task if obj.kind == PauseKind.TASK else control.pause_queue
        by = str(request.user.get_username())
        if not pause(obj.name, by=by, reason=obj.reason):
            self.message_user(request, f"{obj.kind} {obj.name} was paused already.", messages.INFO)
        stored = TaskPause.objects.get(kind=obj.kind, name=obj.name.strip())
        obj.pk, obj.paused_at, obj.paused_by = stored.pk, stored.paused_at, stored.paused_by

    @admin.action(
        description="Resume selected (their runs go out in the next relay sweep)",
        permissions=["pause"],
    )
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[TaskPause]) -> None:
        resumed = []
        for pause in queryset:
            resume = control.resume_task if pause.kind == PauseKind.TASK else control.resume_queue
            self.log_change(request, pause, f"Resumed {pause.kind} {pause.name}")
            if resume(pause.name):
                resumed.append(f"{pause.kind} {pause.name}")
        self.message_user(
            request,
            f"Resumed {len(resumed)}: {', '.join(resumed) or 'nothing'}.",
            messages.SUCCESS if resumed else messages.WARNING,
        )


admin.site.register(TaskPause, TaskPauseAdmin)
