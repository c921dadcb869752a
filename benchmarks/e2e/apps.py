"""The ASGI applications the benchmark serves, one per subject kind.

* ``apps:raw`` — a raw ASGI WebSocket app: no Channels, no Django, no broker. Each process keeps
  the set of its open sockets; a frame from one client is written to every *other* socket of
  the same process in a plain ``for ... await send(...)`` loop. Nothing crosses processes, so it
  is the server's physical writing limit, not a competitor.
* ``apps:channels`` — Channels' ``URLRouter`` over the consumers in consumers.py:
  ``ws/chat`` (plain Channels chat) and ``ws/neffos`` (neffos namespace). Built on first access,
  so that serving ``apps:raw`` never imports Django; settings: ``benchmarks.e2e.settings``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Event = dict[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]

_sockets: set[Send] = set()


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    """Relay each frame to every other socket of this process."""
    if scope["type"] != "websocket":
        return  # no HTTP, and servers run with lifespan off
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
            _sockets.add(send)
        elif kind == "websocket.receive":
            frame = {"type": "websocket.send", "text": message.get("text")}
            if message.get("text") is None:
                frame = {"type": "websocket.send", "bytes": message.get("bytes")}
            for other in list(_sockets):
                if other is not send:
                    try:
                        await other(frame)
                    except Exception:  # closed meanwhile: its disconnect removes it
                        _sockets.discard(other)
        elif kind == "websocket.disconnect":
            _sockets.discard(send)
            return


def _channels_app() -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.e2e.settings")
    import django

    django.setup()
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from .consumers import BenchNeffosConsumer, PlainChatConsumer

    routes = [
        path("ws/chat", PlainChatConsumer.as_asgi()),
        path("ws/neffos", BenchNeffosConsumer.as_asgi()),
    ]
    return ProtocolTypeRouter({"websocket": URLRouter(routes)})


def __getattr__(name: str) -> Any:
    if name == "channels":
        app = _channels_app()
        globals()["channels"] = app
        return app
    raise AttributeError(name)
