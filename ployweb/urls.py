"""/admin/ (Django admin), /api/ (the HTTP API), and the dashboard at /."""

from django.contrib import admin
from django.urls import include, path

from engine.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("dashboard.urls")),
]
