"""Django views: ``metrics`` serves the ledger's Prometheus metrics.

Mount it with ``path("metrics", taskkit.views.metrics)``. When ``TASKKIT_METRICS_TOKEN`` is set the
view requires ``Authorization: Bearer <token>``; otherwise protect the path as you would any
internal endpoint.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .conf import settings


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics token required\n", status=401, content_type="text/plain")
    from prometheus_client import CONTENT_TYPE_LATEST

    from .metrics import render

    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
