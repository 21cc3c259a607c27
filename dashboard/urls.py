"""The dashboard, mounted at / (after /admin/ and /api/)."""

from __future__ import annotations

from django.urls import path

from dashboard import bulk_views, schedule_views, views, worker_views

app_name = "dashboard"

urlpatterns = [
    path("", views.execution_list, name="execution_list"),
    path("trigger/", views.trigger_execution, name="trigger"),
    path("workflows/", views.workflow_list, name="workflow_list"),
    path("workers/", worker_views.worker_list, name="worker_list"),
    path("schedules/", schedule_views.schedule_list, name="schedule_list"),
    path("schedules/<str:name>/pause/", schedule_views.pause_schedule, name="pause_schedule"),
    path("schedules/<str:name>/resume/", schedule_views.resume_schedule, name="resume_schedule"),
    path("bulk/<str:action>/", bulk_views.confirm_bulk, name="confirm_bulk"),
    path("bulk/<str:action>/run/", bulk_views.run_bulk, name="run_bulk"),
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
