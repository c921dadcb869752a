"""The chat page, and an HTTP endpoint that announces to every client through the layer."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels_neffos.namespaces import broadcast_sync


def index(request: HttpRequest) -> HttpResponse:
    return render(
        request, "chat/index.html", {"instance": settings.INSTANCE_NAME, "peers": settings.PEERS}
    )


def dashboard(request: HttpRequest) -> HttpResponse:
    """The live dashboard (chat/dashboard.py pushes its data through a namespace)."""
    return render(request, "dashboard/index.html", {"instance": settings.INSTANCE_NAME})


@csrf_exempt
@require_POST
def announce(request: HttpRequest) -> JsonResponse:
    """POST text=... : a notice to every client of the chat namespace, on every instance."""
    text = request.POST.get("text", "")[:500]
    broadcast_sync("chat", "notice", f"announcement: {text}")
    return JsonResponse({"sent": text})
