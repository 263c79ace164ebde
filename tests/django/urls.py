"""Routes for ``test_django.py``."""

from __future__ import annotations

from django.urls import include, path

from . import views

shop = [path("configured", views.free, name="configured")]

urlpatterns = [
    path("fn-sync", views.fn_sync),
    path("fn-async", views.fn_async),
    path("per-method", views.PerMethod.as_view()),
    path("on-dispatch", views.OnDispatch.as_view()),
    path("dispatch-and-get", views.DispatchAndGet.as_view()),
    path("async-view", views.AsyncView.as_view()),
    path("stacked", views.stacked),
    path("own-header", views.own_header),
    path("no-store", views.no_store),
    path("stream-work", views.stream_work),
    path("stream-fails", views.stream_fails),
    path("free", views.free),
    path("shop/", include((shop, "shop"))),
]
