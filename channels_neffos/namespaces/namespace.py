"""Declaring a neffos namespace: hooks, event handlers, and what a handler can do.

::

    class Chat(Namespace):
        name = "chat"

        async def on_connect(self):                 # raise Reject("...") to refuse
            self.nickname = self.connection.scope["query_string"].decode() or "anonymous"

        async def on_join(self, room):              # raise Reject("...") to refuse
            await self.broadcast("notice", f"{self.nickname} joined", room=room)

        @event("chat")
        async def chat(self, message):              # a client's emit or ask
            await self.broadcast("chat", message.body, room=message.room)

        @event("whoami")
        async def whoami(self, message):
            return self.id                          # answers the client's ask

One instance of each namespace class lives per connection while the client is connected to it.
A handler's return value (``str`` or ``bytes``) is sent back to the client on the same event —
as the answer when the client asked, as an echo otherwise; raising :class:`Reject` sends an error
the client sees (``ask()`` rejects); any other exception is logged and the client gets
``"internal server error"``.

Broadcasts go through the channel layer to every instance: ``broadcast`` reaches every connection
in the namespace (or the room) on every server, excluding this connection unless
``include_self=True``; ``send_to`` reaches one connection by id, wherever it is.

Presence: ``await self.presence(room)`` lists the connections in the namespace (``room=""``) or in
a room, on every instance, with the ``presence_info`` each consumer set (``by="user"`` counts
several connections of one user once); with ``presence_events = True`` a room's members get
``_OnPresenceJoin``/``_OnPresenceLeave`` events when others join or leave it (see
:mod:`.presence`).

Native messages (plain WebSocket frames, no neffos header) go to the empty namespace's
``NATIVE_MESSAGE`` handler, as in neffos::

    class Relay(Namespace):
        name = ""

        @event(NATIVE_MESSAGE)
        async def relay(self, message):             # message.body: the frame, str or bytes
            await self.broadcast(NATIVE_MESSAGE, message.body)   # written bare to every client

If that is the consumer's only namespace and its only event, the consumer is *native only*: no
neffos handshake, any WebSocket client may connect, and every frame is a native message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol, TypeVar

from .presence import query as presence_query
from .protocol import ON_NATIVE_MESSAGE, Message

_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])
_EVENT_ATTRIBUTE = "_neffos_event"
#: The event of native messages: plain WebSocket frames, in and out (neffos' ``OnNativeMessage``).
NATIVE_MESSAGE = ON_NATIVE_MESSAGE
DEFAULT_ASK_TIMEOUT = 5.0


class Reject(Exception):
    """Refuse a connect/join, or answer a client's event with an error the client sees."""


class Connection(Protocol):
    """What a :class:`Namespace` may use of its connection (a
    :class:`~channels_neffos.namespaces.NeffosConsumer`): the consumer implements it, and a test
    may stand in for it."""

    #: The connection's id (``conn.ID`` in neffos.js); also its channel name.
    connection_id: str
    #: The ASGI scope of the WebSocket (user, headers, query string...).
    scope: dict[str, Any]
    #: The channel layer the connection uses.
    channel_layer: Any

    async def write(self, message: Message) -> None:
        """Send ``message`` to this connection's client."""

    async def ask_client(self, message: Message, timeout: float) -> str | bytes:
        """Ask this connection's client and return its answer."""

    async def broadcast(self, message: Message, exclude: str | None) -> None:
        """Send ``message`` to its scope on every instance, but ``exclude``."""

    async def send_to(self, connection_id: str, message: Message) -> None:
        """Send ``message`` to one connection, wherever it is."""

    async def force_join(self, namespace: Namespace, room: str) -> None: ...

    async def force_leave(self, namespace: Namespace, room: str) -> None: ...

    async def force_disconnect(self, namespace: Namespace) -> None: ...


def event(name: str | Callable[..., Awaitable[Any]]) -> Any:
    """Mark a method as the handler of the client event ``name`` (default: the method's name)."""

    def mark(handler: _Handler, event_name: str) -> _Handler:
        setattr(handler, _EVENT_ATTRIBUTE, event_name)
        return handler

    if callable(name):
        return mark(name, name.__name__)
    return lambda handler: mark(handler, name)


class Namespace:
    """Base class of a namespace; subclass it, set ``name`` and add ``@event`` handlers."""

    #: The namespace name the client connects to (``conn.connect(name)`` in neffos.js).
    name: ClassVar[str]
    #: event name -> method name, collected from ``@event`` marks.
    events: ClassVar[dict[str, str]] = {}
    #: Send ``_OnPresenceJoin``/``_OnPresenceLeave`` (body: JSON ``{"id": ..., "info": ...}``) to
    #: a room's other members, on every instance, when a connection joins or leaves it.
    presence_events: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(cls.events)
        for attribute, value in vars(cls).items():
            event_name = getattr(value, _EVENT_ATTRIBUTE, None)
            if event_name is not None:
                found[event_name] = attribute
        cls.events = found

    @classmethod
    def accepts_native_messages(cls) -> bool:
        """The empty namespace with a ``NATIVE_MESSAGE`` handler: native frames are its events."""
        return getattr(cls, "name", None) == "" and NATIVE_MESSAGE in cls.events

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        #: The rooms of this namespace this connection has joined.
        self.rooms: set[str] = set()

    @property
    def id(self) -> str:
        """This connection's id (what neffos.js shows as ``conn.ID``)."""
        return self.connection.connection_id

    # -- hooks (override) ----------------------------------------------------------------------

    async def on_connect(self) -> None:
        """The client asks to connect. Raise :class:`Reject` to refuse."""

    async def on_disconnect(self) -> None:
        """The client left the namespace, or the connection closed. Rooms are already left."""

    async def on_join(self, room: str) -> None:
        """The client asks to join ``room``. Raise :class:`Reject` to refuse."""

    async def on_leave(self, room: str) -> None:
        """The client left ``room`` (asked, forced, or by disconnecting)."""

    async def on_event(self, message: Message) -> str | bytes | None:
        """Called for client events that no ``@event`` handler takes (neffos' ``_OnAnyEvent``)."""
        raise Reject(f"unknown event {message.event!r}")

    # -- talking to this client ----------------------------------------------------------------

    async def emit(self, event_name: str, body: str | bytes = "", room: str = "") -> None:
        """Send an event to this connection's client."""
        await self.connection.write(Message(self.name, room, event_name, body))

    async def ask(
        self,
        event_name: str,
        body: str | bytes = "",
        room: str = "",
        timeout: float = DEFAULT_ASK_TIMEOUT,
    ) -> str | bytes:
        """Ask this client and return its answer (the client handler returns
        ``neffos.reply(value)``). Raises ``AskError`` if it answers with an error and
        ``AskTimeout`` if it does not answer in time; a native-only client cannot be asked
        (``AskError``)."""
        return await self.connection.ask_client(Message(self.name, room, event_name, body), timeout)

    # -- talking to other connections, on any instance -----------------------------------------

    async def broadcast(
        self,
        event_name: str,
        body: str | bytes = "",
        room: str = "",
        *,
        include_self: bool = False,
    ) -> None:
        """Send to every connection in this namespace (or in ``room``), on every instance."""
        exclude = None if include_self else self.id
        await self.connection.broadcast(Message(self.name, room, event_name, body), exclude)

    async def send_to(
        self, connection_id: str, event_name: str, body: str | bytes = "", room: str = ""
    ) -> None:
        """Send to the one connection ``connection_id`` (neffos' ``To``), wherever it is."""
        await self.connection.send_to(connection_id, Message(self.name, room, event_name, body))

    async def presence(self, room: str = "", *, by: str | None = None) -> list[dict[str, Any]]:
        """Who is in this namespace (``room=""``) or in ``room``, on every instance.

        ``[{"id": connection_id, "info": presence_info}, ...]`` sorted by id; with ``by="user"``,
        one ``{"key": user, "ids": [...], "info": ...}`` per distinct ``info["user"]`` (see
        :mod:`.presence`). Exact once joins and leaves have returned; no time window."""
        return await presence_query(self.connection.channel_layer, self.name, room, by)

    # -- forcing membership --------------------------------------------------------------------

    async def join(self, room: str) -> None:
        """Make this client join ``room`` (it is told, and may refuse with an error)."""
        await self.connection.force_join(self, room)

    async def leave(self, room: str) -> None:
        """Make this client leave ``room``."""
        await self.connection.force_leave(self, room)

    async def disconnect(self) -> None:
        """Disconnect this client from the namespace (its rooms are left first)."""
        await self.connection.force_disconnect(self)
