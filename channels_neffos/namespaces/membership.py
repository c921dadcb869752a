"""How a connection joins and leaves namespaces and rooms: the hub, the hooks, presence.

:class:`Membership` is the part of :class:`~.consumer.NeffosConsumer` that changes what a
connection is a member of:

* **Joining** a scope (the namespace, or a room of it) makes the connection a member in this
  process's :mod:`hub <.hub>` — which is in the scope's Channels group and writes its broadcasts
  to the connection — and returns once a broadcast sent from anywhere reaches it. A room is in
  ``Namespace.rooms`` once joined.
* **Leaving** stops delivery and presence at once, then runs ``on_leave`` (``on_disconnect`` for
  the namespace, after its rooms). When the socket closes, :meth:`Membership._withdraw` takes the
  connection out of every scope first, before any hook runs or anything is awaited.
* **Presence** (:mod:`.presence`): the hub reports ``presence_info`` for each member;
  with ``Namespace.presence_events``, joining or leaving a room sends ``_OnPresenceJoin`` /
  ``_OnPresenceLeave`` to the room's other members once the hub's bookkeeping has changed.
* **Server-initiated** joins, leaves and disconnects ask the client first (it may refuse); a
  native-only client is not asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._drops import RateLimitedLog
from . import protocol
from .hub import Hub, Member
from .namespace import Namespace
from .outgoing import counters
from .presence import PRESENCE_JOIN, PRESENCE_LEAVE, check_info, event_body
from .protocol import Message

logger = logging.getLogger("channels_neffos.namespaces")
#: Presence events that could not be sent: at WARNING, at most one line per 10 s.
_event_failed = RateLimitedLog(logger, logging.WARNING)
#: How long a server-initiated join/leave/disconnect waits for the client to confirm.
FORCED_REQUEST_TIMEOUT = 10.0


class Membership:
    """Namespace and room membership of one connection (a mixin of ``NeffosConsumer``)."""

    _member: Member | None = None  # this connection in the hub; made once the socket is accepted
    _presence_info: dict[str, Any] | None = None

    if TYPE_CHECKING:  # provided by NeffosConsumer
        connection_id: str
        connected_namespaces: dict[str, Namespace]
        _hub: Hub
        _native_only: bool

        async def _user_code(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> Any: ...
        async def broadcast(self, message: Message, exclude: str | None) -> None: ...
        async def ask_client(self, message: Message, timeout: float) -> str | bytes: ...
        async def close(self, code: Any = None, reason: str | None = None) -> None: ...

    @property
    def presence_info(self) -> dict[str, Any]:
        """What presence queries report for this connection (``{}`` until set).

        A JSON-able dict with ``str`` keys, e.g. ``{"user": 42, "name": "Ada"}``; assigning a new
        one (``TypeError`` if it is not such a dict) shows at once in every scope the connection
        is in, as does changing the dict in place."""
        if self._presence_info is None:
            self._presence_info = {}
        return self._presence_info

    @presence_info.setter
    def presence_info(self, info: dict[str, Any]) -> None:
        self._presence_info = check_info(info)
        if self._member is not None:
            self._member.info = info

    # -- joining and leaving --------------------------------------------------------------------

    async def _connect_namespace(self, namespace: Namespace) -> None:
        try:
            await self._user_code(namespace.on_connect)
            await self._join_scope(namespace.name, "")
        except BaseException:
            for room in namespace.rooms:  # joined by on_connect before it refused
                await self._hub.leave((namespace.name, room), self.connection_id)
                await self._presence_event(namespace, room, PRESENCE_LEAVE)
            raise
        self.connected_namespaces[namespace.name] = namespace

    async def _join_scope(self, namespace: str, room: str) -> None:
        if self._member is None:
            raise RuntimeError("a connection joins namespaces and rooms only once accepted")
        await self._hub.join((namespace, room), self.connection_id, self._member)

    async def _add_room(self, namespace: Namespace, room: str) -> None:
        await self._join_scope(namespace.name, room)
        namespace.rooms.add(room)
        await self._presence_event(namespace, room, PRESENCE_JOIN)

    async def _drop_room(self, namespace: Namespace, room: str) -> None:
        namespace.rooms.discard(room)
        await self._hub.leave((namespace.name, room), self.connection_id)
        await self._presence_event(namespace, room, PRESENCE_LEAVE)
        await self._user_code(namespace.on_leave, room)

    async def _presence_event(self, namespace: Namespace, room: str, event_name: str) -> None:
        """Tell the room's other members, if the namespace wants it (``presence_events``).

        Sent once the hub's bookkeeping has changed, so a member that queries presence on
        receiving it sees the change. A failure to send is counted and logged; it does not undo
        the join or leave."""
        if not namespace.presence_events:
            return
        try:
            body = event_body(self.connection_id, self.presence_info)
            await self.broadcast(
                Message(namespace.name, room, event_name, body), self.connection_id
            )
        except Exception:
            counters["presence_event_failed"] += 1
            _event_failed(
                "presence_event",
                "%d presence event(s) could not be sent (latest: %s in %r/%r)",
                event_name,
                namespace.name,
                room,
                exc_info=True,
            )

    async def _drop_namespace(self, namespace: Namespace) -> None:
        for room in list(namespace.rooms):
            await self._drop_room(namespace, room)
        self.connected_namespaces.pop(namespace.name, None)
        await self._hub.leave((namespace.name, ""), self.connection_id)
        await self._user_code(namespace.on_disconnect)

    def _withdraw(self) -> list[asyncio.Task[None]]:
        """Out of every scope at once (the socket closed): no presence query lists it from now
        on. Returns the tasks that bring the hub's group memberships in line."""
        scopes = [
            (name, room)
            for name, namespace in self.connected_namespaces.items()
            for room in ("", *namespace.rooms)
        ]
        return self._hub.leave_all(scopes, self.connection_id)

    # -- server-initiated membership changes ---------------------------------------------------

    async def _request_client(self, request: Message) -> None:
        # The client answers a request it accepts with an empty frame, one it refuses with an
        # error (AskError here, for the caller of join/leave/disconnect). A native-only client
        # knows nothing of namespaces and rooms: there is nothing to ask it.
        if not self._native_only:
            await self.ask_client(request, timeout=FORCED_REQUEST_TIMEOUT)

    async def force_join(self, namespace: Namespace, room: str) -> None:
        if room in namespace.rooms:
            return
        await self._request_client(Message(namespace.name, room, protocol.ON_ROOM_JOIN))
        await self._add_room(namespace, room)

    async def force_leave(self, namespace: Namespace, room: str) -> None:
        if room not in namespace.rooms:
            return
        await self._request_client(Message(namespace.name, room, protocol.ON_ROOM_LEAVE))
        await self._drop_room(namespace, room)

    async def force_disconnect(self, namespace: Namespace) -> None:
        if self.connected_namespaces.get(namespace.name) is not namespace:
            return
        await self._request_client(Message(namespace.name, "", protocol.ON_NAMESPACE_DISCONNECT))
        await self._drop_namespace(namespace)
        if self._native_only:
            await self.close()  # its only namespace: nothing is left to talk about
