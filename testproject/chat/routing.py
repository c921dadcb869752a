from django.urls import path

from .consumers import ChatConsumer, NativeConsumer

websocket_urlpatterns = [
    path("ws/chat", ChatConsumer.as_asgi()),
    path("ws/native", NativeConsumer.as_asgi()),
]
