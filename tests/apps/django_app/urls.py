"""The scenario routes (see ``tests/apps/common.py``)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("free", views.free),
    path("search", views.search),
    path("render", views.Render.as_view()),
    path("fail", views.fail),
    path("missing", views.missing),
    path("stream", views.stream),
    path("configured", views.configured, name="configured"),
    path("a/b", views.ab, name="ab"),
    path("echo", views.echo_body),
    path("runs", views.runs),
    path("overuse", views.overuse),
    path("relay", views.relay),
    path("reasoned", views.reasoned),
    path("refused", views.refused),
]
