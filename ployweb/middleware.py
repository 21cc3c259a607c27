"""Checks every request needs before anything reads its body."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse

from engine.config import shown

CONTENT_LENGTH = re.compile(r"[0-9]{1,4000}")


class ContentLengthMiddleware:
    """A malformed Content-Length is a 400, not a 500 from the CSRF check that reads the body
    of a dashboard or admin POST before any view runs. The API checks it itself, with
    messages of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared and not CONTENT_LENGTH.fullmatch(declared) and not _is_api(request):
            raise BadRequest(
                f"the Content-Length header must be the body's size in bytes, got {shown(declared)}"
            )
        return self.get_response(request)


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")
