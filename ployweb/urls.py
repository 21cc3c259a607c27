"""/admin/ (Django admin), /api/ (the HTTP API), /metrics (Prometheus), and the dashboard at /.

Errors Django answers itself (a bad Host header, an exception outside a view) get its HTML pages,
except under /api/, whose clients read JSON `{"detail": ...}` whatever went wrong."""

from __future__ import annotations

import logging
import sys

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults

from engine import metrics
from engine.api import api

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics.scrape, name="metrics"),
    path("", include("dashboard.urls")),
]


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not request.path_info.startswith(API_PREFIX):
        return defaults.bad_request(request, exception)
    detail = f"bad request: {exception}" if str(exception) else "bad request"
    return JsonResponse({"detail": detail}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """Called while the exception is handled: its traceback goes to the log, whatever DEBUG says
    (Django logs it only to handlers that DEBUG enables, or to ADMINS by mail)."""
    logger.error("%s %s failed", request.method, request.path, exc_info=sys.exc_info())
    if not request.path_info.startswith(API_PREFIX):
        return defaults.server_error(request)
    return JsonResponse({"detail": "internal server error: see the server's log"}, status=500)


handler400 = bad_request
handler500 = server_error
