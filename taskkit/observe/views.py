"""Django views: ``metrics`` serves the ledger's Prometheus metrics, to those allowed to read them.

Mount it with ``path("metrics", taskkit.views.metrics)``. The figures name every task and every
relay's host and pid, and each scrape runs a few aggregate queries, so the view answers only:

- a scraper sending ``Authorization: Bearer <TASKKIT_METRICS_TOKEN>`` (compared in constant time);
- a logged-in, active staff user with the view permission on runs (``taskkit.view_taskrun``);
- anyone, when ``TASKKIT_METRICS_PUBLIC = True`` (a private network that protects the path).

Anyone else gets 401 with ``WWW-Authenticate: Bearer`` (403 for a logged-in user without the
permission), before any query runs.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ..core.conf import settings

VIEW_PERMISSION = "taskkit.view_taskrun"
HOW = (
    "Send 'Authorization: Bearer <TASKKIT_METRICS_TOKEN>', log in as a staff user with the "
    f"{VIEW_PERMISSION} permission, or set TASKKIT_METRICS_PUBLIC = True.\n"
)


def _bearer(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """The response refusing this request the metrics, or ``None`` if it may read them."""
    if settings.METRICS_PUBLIC:
        return None
    expected, given = settings.METRICS_TOKEN, _bearer(request)
    if expected and given is not None and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION):
            return None
        if given is None:
            return HttpResponse(
                f"metrics: this user may not view runs. {HOW}",
                status=403,
                content_type="text/plain",
            )
    challenge = 'Bearer realm="taskkit metrics"'
    if given is not None:
        challenge += ', error="invalid_token"'
    response = HttpResponse(
        f"metrics: authentication required. {HOW}", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = challenge
    return response


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    from prometheus_client import CONTENT_TYPE_LATEST

    from .metrics import render

    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
