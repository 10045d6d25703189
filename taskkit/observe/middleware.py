"""Gives every web request an id, so the runs it dispatches and their log lines can name it.

``RequestIdMiddleware`` takes the incoming request id header (``X-Request-ID`` by default, see
``TASKKIT_REQUEST_ID_HEADER``) when it looks like an id, or makes a new one; sets it for the
request with ``taskkit.core.context.set_request_id`` (dispatch stores it on each run as
``TaskRun.request_id``), exposes it as ``request.request_id`` and returns it in the response
header of the same name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ..core.conf import settings
from ..core.context import reset_request_id, set_request_id

#: What an incoming id may look like: short, and nothing that could forge a log line.
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,63}")


def request_id_from(value: str | None) -> str:
    """``value`` if it is a sane request id, else a new random one."""
    if value and SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = settings.REQUEST_ID_HEADER
        request_id = request_id_from(request.headers.get(header))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request_id(token)
        response[header] = request_id
        return response
