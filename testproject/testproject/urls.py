from chat import views
from django.urls import path

from channels_neffos.metrics import metrics_view

urlpatterns = [
    path("", views.index, name="index"),
    path("dashboard", views.dashboard, name="dashboard"),
    path("api/announce", views.announce, name="announce"),
    path("metrics", metrics_view, name="metrics"),
]
