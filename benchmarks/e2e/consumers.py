"""The two Channels consumers of the benchmark: a plain chat, and a neffos namespace.

Both relay every client message to everyone in one room, on every instance, through the
channel layer; imported (with Django) only by the Channels app in apps.py.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from channels_neffos.namespaces import Message, Namespace, NeffosConsumer, event

ROOM = "room"


class PlainChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """What a Channels user writes today: one group, ``group_send`` per message."""

    async def connect(self) -> None:
        await self.channel_layer.group_add(ROOM, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(ROOM, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(ROOM, {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class Bench(Namespace):
    """The neffos way: the client joins a room, each ``chat`` event is broadcast to it."""

    name = "bench"

    @event("chat")  # type: ignore[untyped-decorator]
    async def chat(self, message: Message) -> None:
        await self.broadcast("chat", message.body, room=message.room)


class BenchNeffosConsumer(NeffosConsumer):
    namespaces = [Bench]
