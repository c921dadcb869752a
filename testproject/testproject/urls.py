from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("api/announce", views.announce, name="announce"),
]
