"""The chat: one neffos namespace, ``chat``, with rooms, across every daphne instance.

Client events (see static/chat/app.js): ``chat`` (a room message, broadcast to the room's other
members), ``whoami`` (ask: your connection id), ``who`` (ask: who is in a room, gathered from
every instance through a group of the chat's own, ``who.<room hash>``), ``whisper`` (to one
connection id), ``poke`` (the server asks another client "ping" and returns its answer). Joining
the room ``closed`` is refused.

``ws/native?room=<room>`` is for plain WebSocket clients (no neffos.js, e.g. ``websocat``): every
text or binary frame is relayed, as it is, to the other plain clients in that room on every
instance — neffos' native messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from typing import Any
from urllib.parse import parse_qs

from channels_neffos.namespaces import (
    NATIVE_MESSAGE,
    Message,
    Namespace,
    NeffosConsumer,
    Reject,
    event,
)
from channels_neffos.namespaces import server as neffos_server

#: How long "who" listens for answers from the other instances.
PRESENCE_WINDOW = 0.3


def presence_group(room: str) -> str:
    """The group whose members answer "who is in ``room``": each member consumer itself.

    (The namespace's own room groups hold one hub per process, which writes frames only.)"""
    return "who." + hashlib.sha256(room.encode()).hexdigest()[:40]


class Chat(Namespace):
    name = "chat"

    async def on_connect(self) -> None:
        query = parse_qs(self.connection.scope.get("query_string", b"").decode())
        self.nickname = (query.get("name") or ["anonymous"])[0][:40]

    async def on_join(self, room: str) -> None:
        if room == "closed":
            raise Reject("this room is closed")
        layer = self.connection.channel_layer
        await layer.group_add(presence_group(room), self.connection.channel_name)
        await self.broadcast("notice", f"{self.nickname} joined {room}", room=room)

    async def on_leave(self, room: str) -> None:
        layer = self.connection.channel_layer
        await layer.group_discard(presence_group(room), self.connection.channel_name)
        await self.broadcast("notice", f"{self.nickname} left {room}", room=room)

    @event("chat")
    async def chat(self, message: Message) -> None:
        if message.room not in self.rooms:
            raise Reject("join the room first")
        text = json.dumps({"from": self.nickname, "id": self.id, "text": message.text})
        await self.broadcast("chat", text, room=message.room)

    @event("whoami")
    async def whoami(self, message: Message) -> str:
        return self.id

    @event("who")
    async def who(self, message: Message) -> str:
        room = message.text
        assert isinstance(self.connection, ChatConsumer)  # noqa: S101 - wiring, not input
        present = await self.connection.gather_presence(room)
        return json.dumps(sorted(present))

    @event("whisper")
    async def whisper(self, message: Message) -> None:
        request = json.loads(message.text)
        text = json.dumps({"from": self.nickname, "id": self.id, "text": request["text"]})
        await self.send_to(request["to"], "whisper", text)

    @event("poke")
    async def poke(self, message: Message) -> str | bytes:
        """Ask another client (any instance) "ping" and return what it answered."""
        return await neffos_server.ask(message.text, self.name, "ping", self.nickname, timeout=5)


class ChatConsumer(NeffosConsumer):
    namespaces = [Chat]

    async def connect(self) -> None:
        await super().connect()
        self._presence: dict[str, list[str]] = {}

    async def gather_presence(self, room: str) -> list[str]:
        """Nicknames of the members of ``room`` on every instance (answers for a short window)."""
        token = secrets.token_hex(8)
        answers = self._presence[token] = []
        query = {
            "type": "chat.presence_query",
            "room": room,
            "token": token,
            "reply_to": self.channel_name,
        }
        try:
            await self.channel_layer.group_send(presence_group(room), query)
            await asyncio.sleep(PRESENCE_WINDOW)
        finally:
            del self._presence[token]
        return answers

    async def chat_presence_query(self, query: dict[str, Any]) -> None:
        chat = self.connected_namespaces.get(Chat.name)
        if isinstance(chat, Chat) and query["room"] in chat.rooms:
            answer = {
                "type": "chat.presence_answer",
                "token": query["token"],
                "name": chat.nickname,
            }
            await self.channel_layer.send(query["reply_to"], answer)

    async def chat_presence_answer(self, answer: dict[str, Any]) -> None:
        waiting = self._presence.get(answer["token"])
        if waiting is not None:
            waiting.append(answer["name"])


class NativeRelay(Namespace):
    """Plain WebSocket clients: a frame goes to the others in the same room, on every instance."""

    name = ""

    async def on_connect(self) -> None:
        query = parse_qs(self.connection.scope.get("query_string", b"").decode())
        self.room = (query.get("room") or ["lobby"])[0][:40]
        await self.join(self.room)

    @event(NATIVE_MESSAGE)
    async def relay(self, message: Message) -> None:
        await self.broadcast(NATIVE_MESSAGE, message.body, room=self.room)


class NativeConsumer(NeffosConsumer):
    namespaces = [NativeRelay]
