"""URLs of the example project: the views of uwsgi-sse-offload's README."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("sse/<str:foobar>/", views.sse_view),
    path("sse-channel/<str:foobar>/", views.sse_channel_view),
]
