"""URLs: whether a request is paid is decided from Django's own match, never the raw path."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("search", views.search, name="search"),
    path("render", views.Render.as_view(), name="render"),
    path("health", views.health, name="health"),
]
