"""The chat: one neffos namespace, ``chat``, with rooms, across every daphne instance.

Client events (see static/chat/app.js): ``chat`` (a room message, broadcast to the room's other
members), ``whoami`` (ask: your connection id), ``who`` (ask: the nicknames of the connections in
a room, on every instance, sorted — the namespaces' presence, exact as soon as joins and leaves
have returned, with no time window), ``whisper`` (to one connection id), ``poke`` (the server asks
another client "ping" and returns its answer). Joining the room ``closed`` is refused; joins and
leaves are announced to the room (``notice``) but in rooms named ``quiet-*``. Each
connection's presence info is its nickname, ``{"name": ...}``.

``ws/native?room=<room>`` is for plain WebSocket clients (no neffos.js, e.g. ``websocat``): every
text or binary frame is relayed, as it is, to the other plain clients in that room on every
instance — neffos' native messages.
"""

from __future__ import annotations

import json
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

from .dashboard import Dashboard

#: Rooms whose joins and leaves are not announced (benchmarks.storm measures both kinds).
QUIET = "quiet-"


class Chat(Namespace):
    name = "chat"

    async def on_connect(self) -> None:
        query = parse_qs(self.connection.scope.get("query_string", b"").decode())
        self.nickname = (query.get("name") or ["anonymous"])[0][:40]
        self.connection.presence_info = {"name": self.nickname}

    async def on_join(self, room: str) -> None:
        if room == "closed":
            raise Reject("this room is closed")
        if not room.startswith(QUIET):
            await self.broadcast("notice", f"{self.nickname} joined {room}", room=room)

    async def on_leave(self, room: str) -> None:
        if not room.startswith(QUIET):
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
        """The nicknames in the room ``message.text``, on every instance, sorted."""
        entries = await self.presence(message.text)
        return json.dumps(sorted(entry["info"].get("name", "anonymous") for entry in entries))

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
    namespaces = [Chat, Dashboard]


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
