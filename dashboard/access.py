"""Who may see the dashboard and who may act on it, decided here and nowhere else.

On a local set-up the dashboard is open, as Ploy's local dashboard is. Once ALLOWED_HOSTS names
another host (settings.DASHBOARD_REQUIRES_LOGIN), every page under the dashboard's URL namespace
needs a logged-in staff user, and every POST (trigger, cancel, rerun, and whatever acts later)
needs the permission the admin's actions need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from engine.admin import RUN_PERMISSION

if TYPE_CHECKING:
    from dashboard.views import HtmxHttpRequest

APP_NAME = "dashboard"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, kw_only=True)
class Access:
    requires_login: bool
    may_view: bool
    may_act: bool


OPEN = Access(requires_login=False, may_view=True, may_act=True)


def access_of(request: HttpRequest) -> Access:
    if not settings.DASHBOARD_REQUIRES_LOGIN:
        return OPEN
    user = request.user
    may_view = user.is_active and user.is_staff
    return Access(
        requires_login=True,
        may_view=may_view,
        may_act=may_view and user.has_perm(RUN_PERMISSION),
    )


def describe() -> str:
    """One line for `manage.py serve`: who can reach the dashboard, and why."""
    if not settings.DASHBOARD_REQUIRES_LOGIN:
        return (
            "the dashboard is open to anyone who reaches it (DJANGO_ALLOWED_HOSTS names only "
            "local hosts); name your host there to require a staff login"
        )
    hosts = ", ".join(settings.ALLOWED_HOSTS)
    return (
        f"the dashboard is login-protected (DJANGO_ALLOWED_HOSTS: {hosts}): staff users only, "
        f"acting needs {RUN_PERMISSION}; create one with `manage.py createsuperuser`"
    )


class DashboardAccessMiddleware:
    """Guards every view of the dashboard's URL namespace, including pages added later."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HtmxHttpRequest,
        view: Callable[..., HttpResponse],
        args: tuple[object, ...],
        kwargs: dict[str, object],
    ) -> HttpResponse | None:
        match = request.resolver_match
        if match is None or APP_NAME not in match.app_names:
            return None
        access = access_of(request)
        if not access.may_view:
            return login_redirect(request)
        if request.method not in READ_METHODS and not access.may_act:
            return forbidden(request)
        return None


def login_redirect(request: HtmxHttpRequest) -> HttpResponse:
    """To the admin's login page; an htmx request makes the whole tab go there, not a fragment."""
    response = redirect_to_login(return_path(request), reverse("admin:login"))
    return HttpResponseClientRedirect(response.url) if request.htmx else response


def return_path(request: HtmxHttpRequest) -> str:
    """Where to land after logging in: the page the user was on, never a fragment or a POST."""
    if request.htmx:
        return request.htmx.current_url_abs_path or reverse("dashboard:execution_list")
    if request.method in READ_METHODS:
        return request.get_full_path()
    return reverse("dashboard:execution_list")


def forbidden(request: HtmxHttpRequest) -> HttpResponse:
    response = render(
        request,
        "dashboard/403.html",
        {"permission": RUN_PERMISSION},
        status=403,
    )
    if request.htmx:  # shown in place of the page's <main>, whatever region the request targets
        response["HX-Retarget"] = "#main"
        response["HX-Reswap"] = "outerHTML"
        response["HX-Reselect"] = "#main"
    return response


def access_context(request: HttpRequest) -> dict[str, Access]:
    """Templates show the buttons and forms only to those allowed to use them."""
    return {"dashboard_access": access_of(request)}
