"""Checks every request needs before anything reads its body, and the browser's middleware
skipped for /api/ requests."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse
from django_htmx.middleware import HtmxMiddleware

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


class BrowserOnly:
    """A browser's middleware (sessions, the logged-in user, flash messages, htmx) skipped for
    /api/ requests, which authenticate with a bearer token and never read any of them: the
    session store and the messages' cookie signer cost more than a trigger's INSERT."""

    get_response: Callable[[HttpRequest], HttpResponse]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _is_api(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class BrowserSessionMiddleware(BrowserOnly, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(BrowserOnly, MessageMiddleware):
    pass


class BrowserHtmxMiddleware(BrowserOnly, HtmxMiddleware):
    pass
