"""The dashboard, mounted at / (after /admin/ and /api/)."""

from __future__ import annotations

from django.urls import path

from dashboard import views, worker_views

app_name = "dashboard"

urlpatterns = [
    path("", views.execution_list, name="execution_list"),
    path("trigger/", views.trigger_execution, name="trigger"),
    path("workflows/", views.workflow_list, name="workflow_list"),
    path("workers/", worker_views.worker_list, name="worker_list"),
    path("executions/<str:execution_id>/", views.execution_detail, name="execution_detail"),
    path("executions/<str:execution_id>/value/", views.stored_value, name="stored_value"),
    path(
        "executions/<str:execution_id>/steps/<int:position>/attempts/",
        views.step_attempts,
        name="step_attempts",
    ),
    path("executions/<str:execution_id>/cancel/", views.cancel_execution, name="cancel"),
    path("executions/<str:execution_id>/rerun/", views.rerun_execution, name="rerun"),
    path("executions/<str:execution_id>/events/", views.send_event, name="send_event"),
]
