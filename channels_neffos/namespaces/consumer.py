"""A Channels WebSocket consumer that speaks the neffos protocol to the ``neffos.js`` client.

::

    class ChatConsumer(NeffosConsumer):
        namespaces = [Chat]          # Namespace subclasses, see namespace.py

    websocket_urlpatterns = [path("echo", ChatConsumer.as_asgi())]

How it works:

* The connection id (``conn.ID`` in neffos.js) is the consumer's channel name, so a message for
  one connection (``send_to``, a server ask) needs no lookup: it is sent to that channel, on
  whatever instance it lives.
* Connecting to a namespace, or joining a room, makes the connection a member of that scope in
  this process's :mod:`hub <.hub>`, which is in the group ``ns.<namespace>`` or
  ``ns.<namespace>.r.<room>`` (see :mod:`.groups`) and writes each broadcast to every local
  member. Leaving, disconnecting from the namespace and closing the socket end that, and run
  ``on_leave``/``on_disconnect`` (see :mod:`.membership`).
* Presence (:mod:`.presence`): ``presence_info``, a JSON-able dict the application sets (e.g. in
  ``on_handshake`` or ``Namespace.on_connect``; ``{}`` by default), is what presence queries
  report for this connection in every scope it is in; a new value shows at once. When the socket
  closes, the connection is withdrawn from every scope first, before any hook runs.
* Everything written to the client goes through its bounded :mod:`outgoing <.outgoing>` buffer;
  a client that cannot keep up is closed with code 4013 (``max_buffered_frames`` and
  ``max_buffered_bytes`` below).
* Frames from the client are handled one at a time, in order, by a task of their own — so a
  handler may await an answer from its own client (``self.ask``), and channel-layer messages
  (``send_to`` frames, asks) keep flowing while a handler runs.
* Database connections: Channels closes stale ones (``aclose_old_connections``, a hop to the
  sync thread) before every message it dispatches. Here only user code gets that hop — once
  before each event handler and each ``on_*`` hook, if ``DATABASES`` is configured; client
  frames, broadcasts, ``send_to`` frames and membership bookkeeping run without it. Message
  types a subclass handles itself are dispatched by Channels as usual.
* A frame that is not a neffos message is answered with an ``invalid payload`` error frame and
  otherwise ignored; the connection stays open. If a namespace accepts native messages (the empty
  namespace with a ``NATIVE_MESSAGE`` handler), such a frame is a native message instead.
* A client message whose handling would send more than the broker carries (``MessageTooLarge``,
  e.g. the broadcast of a near-1-MiB chat line) is answered with a ``message too large`` error
  if the client waits for an answer, and logged at WARNING at most once per 10 s — not as one
  traceback per frame, which any client could flood the log with.
* Native only (that namespace is the only one, with no other event): no neffos handshake, the
  client is connected to the empty namespace as soon as the WebSocket opens, and every frame is a
  native message. ``on_handshake`` runs before the WebSocket is accepted (``Reject`` refuses it
  with HTTP 403); ``on_connect`` right after (``Reject`` closes it with code 4008). Such a client
  cannot be asked; joining or leaving a room needs no answer from it, and disconnecting it from
  its namespace closes the WebSocket.

Compatible with neffos.js 0.1.34 and its quirks: ``nsConn.leaveAll()`` sends ``_OnRoomLeft``
requests, which are treated as leaves and answered (Go neffos leaves them hanging); a client ask
whose handler returns nothing gets an empty answer rather than no answer (neffos.js asks have no
timeout and would hang forever).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from .._core.validation import check_channel_name
from .._drops import RateLimitedLog
from ..exceptions import AskError, AskTimeout, MessageTooLarge
from . import protocol
from .admission import admission
from .drain import CLOSE_DRAINING, drain
from .groups import room_group
from .hub import Hub, Member, hub_for
from .membership import Membership
from .namespace import NATIVE_MESSAGE, Namespace, Reject
from .outgoing import Outgoing, counters
from .protocol import Message, ProtocolError
from .recovery import DEFAULT_MAX_RECOVERY, REPLAYED, RESUME, Replay, parse_resume, replay
from .server import ASK_TYPE, FRAME_TYPE, frame_message, send_frame_to_group

logger = logging.getLogger("channels_neffos.namespaces")
#: Client frames that get no handler: logged at INFO, at most one line per kind per 10 s.
_dropped_frames = RateLimitedLog(logger, logging.INFO)
#: Client messages too large to pass on: logged at WARNING, at most one line per 10 s.
_too_large = RateLimitedLog(logger, logging.WARNING)
#: Handlers that raised: the traceback at ERROR, at most once per handler per 10 s.
_handler_failed = RateLimitedLog(logger, logging.ERROR)

#: Frames a client may queue before its handshake, and while its handlers are busy.
MAX_QUEUED_FRAMES = 1000
INTERNAL_ERROR = "internal server error"
INVALID_PAYLOAD = "invalid payload"
MESSAGE_TOO_LARGE = "message too large"
# Close codes. daphne refuses every code but 1000 and 3000-4999 (it logs an error and does not
# close), so the standard meanings are carried in the application range: 40xx = 10xx.
#: A first frame that is not the neffos handshake (1002, protocol error).
CLOSE_PROTOCOL_ERROR = 4002
#: A native-only client's ``on_connect`` refused it, or a client floods the server (1008,
#: policy violation).
CLOSE_REFUSED = 4008
#: Messages whose handlers run no user code: dispatched without a database-connection hop.
_FRAMEWORK_MESSAGES = frozenset(("websocket.receive", FRAME_TYPE, ASK_TYPE))


def _databases_configured() -> bool:
    # Django stands a "dummy" backend in for an empty DATABASES; it has nothing to close.
    return any(
        database.get("ENGINE") != "django.db.backends.dummy"
        for database in settings.DATABASES.values()
    )


class NeffosConsumer(Membership, AsyncWebsocketConsumer):  # type: ignore[misc]
    """Set ``namespaces`` to the :class:`Namespace` subclasses clients may connect to."""

    namespaces: ClassVar[list[type[Namespace]]] = []
    _outgoing: Outgoing | None = None  # set once the WebSocket is accepted
    #: Frames that may wait to be written to one client before it counts as too slow and is
    #: closed with code 4013 (see :mod:`.outgoing`).
    max_buffered_frames: ClassVar[int] = 4096
    #: Bytes (characters, for text frames) that may wait to be written to one client.
    max_buffered_bytes: ClassVar[int] = 1 << 20
    #: The most messages one rejoin of a history room replays to a recovering client; one that
    #: missed more gets ``recovered: false`` and nothing replayed (see :mod:`.recovery`).
    max_recovery_messages: ClassVar[int] = DEFAULT_MAX_RECOVERY

    async def on_handshake(self) -> None:
        """The client said hello. Raise :class:`Reject` to refuse the whole connection."""

    @classmethod
    def native_only(cls) -> bool:
        """Only native messages: one namespace, the empty one, whose only event is native."""
        return (
            len(cls.namespaces) == 1
            and cls.namespaces[0].accepts_native_messages()
            and set(cls.namespaces[0].events) == {NATIVE_MESSAGE}
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if drain.draining or (scope.get("type") == "websocket" and not admission.admit()):
            # This instance is going away, or takes no more connections this second: the
            # handshake is refused (403) without a channel, a layer or a task — nothing a drain
            # would have to wait for or close under it, nothing a storm would pile up.
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close"})
            return
        drain.opened(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Gone for good — disconnect() ran and Channels' tasks for it are done — so a drain
            # may close the channel layer now.
            drain.closed(self)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] in _FRAMEWORK_MESSAGES:
            await getattr(self, message["type"].replace(".", "_"))(message)
        else:
            await super().dispatch(message)

    async def _user_code(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run a user hook or handler with Django's database-connection hygiene.

        With no database configured there is no connection to close, and no hop to make."""
        if _databases_configured():
            await aclose_old_connections()
        return await hook(*args)

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        await super().accept(*args, **kwargs)
        self._outgoing = Outgoing(
            self.base_send,
            self.connection_id,
            max_frames=self.max_buffered_frames,
            max_bytes=self.max_buffered_bytes,
        )
        self._member = Member(self._outgoing, self.presence_info)
        if drain.draining:  # the drain began while this one was being accepted
            self._close_for_drain()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: Any = False
    ) -> None:
        """Write a frame to the client, after the frames already waiting (see :mod:`.outgoing`)."""
        if self._outgoing is None:
            await super().send(text_data, bytes_data, close)
            return
        if text_data is not None:
            self._outgoing.push(text_data)
        elif bytes_data is not None:
            self._outgoing.push(bytes_data)
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        if close:
            await self.close(close)

    async def close(self, code: Any = None, reason: str | None = None) -> None:
        """Close the WebSocket once the frames already waiting have been written."""
        if self._outgoing is None:
            await super().close(code, reason)
        else:
            self._outgoing.close(None if code is True else code, reason)

    async def connect(self) -> None:
        self.connection_id: str = self.channel_name
        self.connected_namespaces: dict[str, Namespace] = {}
        self._declared = {ns.name: ns for ns in self.namespaces}
        self._acknowledged = False
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._server_asks: dict[str, asyncio.Future[Message]] = {}
        self._tokens = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handler_task: asyncio.Task[None] | None = None
        self._hub: Hub = hub_for(self.channel_layer)
        #: (namespace, room) -> the position a recovering client last had (see .recovery)
        self._resume_from: dict[tuple[str, str], dict[str, Any] | None] = {}
        #: connection ids whose messages this client sent itself (not replayed to it)
        self._own_ids = frozenset((self.connection_id,))
        self._native_only = self.native_only()
        self._accepts_native = any(ns.accepts_native_messages() for ns in self.namespaces)
        if drain.draining:  # this instance is going away: the client is to connect elsewhere
            await self.close()  # before accept: the WebSocket handshake is refused (403)
            return
        if self._native_only:
            await self._open_native_only()
        else:
            await self.accept()

    async def _open_native_only(self) -> None:
        try:
            await self.on_handshake()  # connect() itself was dispatched with the hygiene hop
        except Reject as refusal:
            logger.info("native connection %s refused: %s", self.connection_id, refusal)
            await self.close()  # before accept: the WebSocket handshake is refused (403)
            return
        await self.accept()
        self._acknowledged = True
        self._handler_task = asyncio.ensure_future(self._handle_frames())
        namespace = self.namespaces[0](self)
        try:
            await self._connect_namespace(namespace)
        except Reject as refusal:
            logger.info("native connection %s refused: %s", self.connection_id, refusal)
            await self.close(code=CLOSE_REFUSED)

    async def disconnect(self, code: int) -> None:
        # First of all, before any await: out of every scope (no presence query lists a closing
        # connection from now on), and no handler goes on to join anything.
        settling = self._withdraw()
        tasks = [*self._tasks, *([self._handler_task] if self._handler_task else [])]
        for task in tasks:
            task.cancel()
        if self._outgoing is not None:
            await self._outgoing.discard()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pending in self._server_asks.values():
            pending.cancel()
        for namespace in list(self.connected_namespaces.values()):
            try:
                await self._drop_namespace(namespace)
            except Exception:  # one failing hook must not keep the others from cleaning up
                logger.exception("leaving namespace %r on disconnect failed", namespace.name)
        # The hub's group memberships; a failure is logged by the hub (the memberships expire).
        await asyncio.gather(*settling, return_exceptions=True)

    def _close_for_drain(self) -> None:
        """Close the WebSocket with :data:`~.drain.CLOSE_DRAINING`, after what is queued."""
        if self._outgoing is not None:
            self._outgoing.close(CLOSE_DRAINING, "server draining")

    # -- frames from the client ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame: str | bytes = text_data if text_data is not None else (bytes_data or b"")
        if self._native_only:
            await self._queue(protocol.native(frame))
            return
        if not self._acknowledged:
            await self._handshake(frame)
            return
        try:
            message = protocol.parse(frame)
        except ProtocolError as exc:
            if self._accepts_native and frame:
                await self._queue(protocol.native(frame))
                return
            _dropped_frames(
                "invalid",
                "%d invalid frame(s) answered with an error (latest from %s: %s)",
                self.connection_id,
                exc,
            )
            await self.write(Message(body=f"{INVALID_PAYLOAD}: {exc}", is_error=True))
            return
        pending = self._server_asks.get(message.wait) if message.wait else None
        if pending is not None and not message.is_client_wait:
            if not pending.done():
                pending.set_result(message)  # the client's answer to one of our asks
            return
        await self._queue(message)

    async def _queue(self, message: Message) -> None:
        """Hand a client message to the handler task, in order."""
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("connection %s floods the server; closing it", self.connection_id)
            await self.close(code=CLOSE_REFUSED)

    async def _handshake(self, frame: str | bytes) -> None:
        if frame not in (protocol.ACK_REQUEST, protocol.ACK_REQUEST.encode()):
            await self.close(code=CLOSE_PROTOCOL_ERROR)  # neffos.js always says "M" first
            return
        try:
            await self._user_code(self.on_handshake)
        except Reject as refusal:
            await self.send(text_data=protocol.ACK_REFUSED + str(refusal))
            await self.close()
            return
        self._acknowledged = True
        await self.send(text_data=protocol.ACK_ACCEPTED + self.connection_id)
        self._handler_task = asyncio.ensure_future(self._handle_frames())

    async def _handle_frames(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                await self._handle(message)
            except MessageTooLarge as exc:  # the client's input was too big to pass on
                _too_large(
                    "too_large",
                    "%d client message(s) too large to pass on (latest from %s: %s)",
                    self.connection_id,
                    exc,
                )
                if message.wait:
                    await self.write(message.error(MESSAGE_TOO_LARGE))
            except Exception:
                # One traceback per handler and 10 s: a client that makes a handler fail on
                # every frame must not be able to flood the log.
                counters["handler_failed"] += 1
                _handler_failed(
                    f"{message.namespace}/{message.event}",
                    "%d failure(s) of the neffos handler for namespace %r, event %r "
                    "(latest on %s; the traceback is logged once per handler per 10 s)",
                    message.namespace,
                    message.event,
                    self.connection_id,
                    exc_info=True,
                )
                if message.wait:
                    await self.write(message.error(INTERNAL_ERROR))

    async def _handle(self, message: Message) -> None:
        event = message.event
        is_request = event in protocol.REQUEST_EVENTS or (
            event == protocol.ON_ROOM_LEFT and message.room and message.is_client_wait
        )
        if is_request:
            if message.wait and not message.is_noop:
                await self._handle_request(message)
            return
        namespace = self.connected_namespaces.get(message.namespace)
        if namespace is None:
            if message.wait:
                await self.write(message.error(protocol.ERR_BAD_NAMESPACE))
            else:  # an emit: neffos answers nothing either
                _dropped_frames(
                    "unconnected",
                    "%d message(s) dropped: not connected to their namespace (latest from %s: %r)",
                    self.connection_id,
                    message.namespace,
                )
            return
        if event == RESUME and not message.room:
            try:
                self._opt_in(namespace, message)
            except Reject as refusal:
                if message.wait:
                    await self.write(message.error(str(refusal)))
                else:
                    _dropped_frames(
                        "resume",
                        "%d malformed %s message(s) ignored (latest from %s: %s)",
                        RESUME,
                        self.connection_id,
                        refusal,
                    )
            return
        method_name = namespace.events.get(event)
        handler = getattr(namespace, method_name) if method_name else namespace.on_event
        try:
            result = await self._user_code(handler, message)
        except Reject as refusal:
            if message.is_native:  # a native client has no way to read an error frame
                _dropped_frames(
                    "native_refused",
                    "%d native message(s) refused by their handler (latest from %s: %s)",
                    self.connection_id,
                    refusal,
                )
            else:
                await self.write(message.error(str(refusal)))
            return
        if result is not None:
            await self.write(message.answer(result))
        elif message.is_client_wait:
            await self.write(message.answer(""))

    async def _handle_request(self, request: Message) -> None:
        try:
            if request.event == protocol.ON_NAMESPACE_CONNECT:
                await self._client_connects(request)
            elif request.event == protocol.ON_NAMESPACE_DISCONNECT:
                namespace = self.connected_namespaces.get(request.namespace)
                if namespace is not None:
                    await self._drop_namespace(namespace)
            else:
                namespace = self.connected_namespaces.get(request.namespace)
                if namespace is None:
                    raise Reject(protocol.ERR_BAD_NAMESPACE)
                if request.event == protocol.ON_ROOM_JOIN:
                    if request.room not in namespace.rooms:
                        await self._user_code(namespace.on_join, request.room)
                        if self._recovers(namespace.name, request.room):
                            await self._recovering_join(namespace, request)
                            return
                        await self._add_room(namespace, request.room)
                elif request.room in namespace.rooms:
                    await self._drop_room(namespace, request.room)
        except Reject as refusal:
            await self.write(request.error(str(refusal)))
            return
        await self.send(text_data=protocol.empty_reply(request.wait))

    # -- recovery (see .recovery) --------------------------------------------------------------

    def _opt_in(self, namespace: Namespace, message: Message) -> None:
        """The client helper asks for positions and says where it was in each room."""
        try:
            resume = parse_resume(message.body)
        except ValueError as exc:
            raise Reject(str(exc)) from None
        if self._member is not None:
            self._member.positions = True
        for room, position in resume.rooms.items():
            self._resume_from[(namespace.name, room)] = position
        if resume.was is not None:
            self._own_ids = frozenset((self.connection_id, resume.was))

    def _recovers(self, namespace: str, room: str) -> bool:
        has_history = getattr(self.channel_layer, "has_history", None)
        return (
            self._member is not None
            and self._member.positions
            and has_history is not None
            and bool(has_history(room_group(namespace, room)))
        )

    async def _recovering_join(self, namespace: Namespace, request: Message) -> None:
        """Join a history room and replay what the client missed before anything live."""
        member, outgoing, scope = self._member, self._outgoing, (namespace.name, request.room)
        if member is None or outgoing is None:
            raise RuntimeError("a connection joins rooms only once accepted")
        member.hold(scope)
        try:
            await self._add_room(namespace, request.room)
        except BaseException:
            member.held.pop(scope, None)  # not in the room: nothing held is for it
            raise
        outcome = Replay(None, 0, recovered=False, reason="unavailable")
        try:
            outgoing.push(protocol.empty_reply(request.wait))
            frames: list[str | bytes] = []
            outcome = await replay(
                self.channel_layer,
                namespace.name,
                request.room,
                self._resume_from.pop(scope, None),
                self.max_recovery_messages,
                self._own_ids,
                frames,
            )
            for frame in frames:
                outgoing.push(frame)
            outgoing.push(
                protocol.serialize(Message(namespace.name, request.room, REPLAYED, outcome.body()))
            )
        finally:
            # Live from here: what was held past the replay (all of it, if the replay failed).
            member.release(scope, outcome.epoch, outcome.offset)

    async def _client_connects(self, request: Message) -> None:
        if request.namespace in self.connected_namespaces:
            return
        declared = self._declared.get(request.namespace)
        if declared is None:
            raise Reject(protocol.ERR_BAD_NAMESPACE)
        await self._connect_namespace(declared(self))

    # -- writing to this client ----------------------------------------------------------------

    async def write(self, message: Message) -> None:
        frame = protocol.serialize(message)
        if self._outgoing is not None:
            self._outgoing.push(frame)
        elif isinstance(frame, bytes):
            await self.send(bytes_data=frame)
        else:
            await self.send(text_data=frame)

    async def ask_client(self, message: Message, timeout: float) -> str | bytes:
        """Send ``message`` with a server wait token and return the client's answer."""
        if self._native_only:
            raise AskError(f"{self.connection_id} is a native-only connection: it cannot answer")
        token = f"{time.time_ns()}{next(self._tokens)}"
        answered: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._server_asks[token] = answered
        try:
            await self.write(dataclasses.replace(message, wait=token))
            try:
                answer = await asyncio.wait_for(answered, timeout)
            except asyncio.TimeoutError:
                raise AskTimeout(f"{self.connection_id} {message.event}", timeout) from None
        finally:
            del self._server_asks[token]
        if answer.is_error:
            raise AskError(answer.text)
        return answer.body

    # -- other connections, through the channel layer ------------------------------------------

    async def broadcast(self, message: Message, exclude: str | None) -> None:
        await send_frame_to_group(self.channel_layer, message, exclude)

    async def send_to(self, connection_id: str, message: Message) -> None:
        try:
            check_channel_name(connection_id)  # Channels' rules, whatever the layer
        except TypeError:
            raise Reject(f"no connection {connection_id!r}") from None
        await self.channel_layer.send(connection_id, frame_message(message))

    async def neffos_frame(self, payload: dict[str, Any]) -> None:
        """A frame sent to this connection (``send_to``): write it if this client may see it.

        Broadcasts do not come this way: the process's hub writes them (see :mod:`.hub`)."""
        namespace = self.connected_namespaces.get(payload["namespace"])
        if namespace is None or (payload["room"] and payload["room"] not in namespace.rooms):
            return  # neffos' write check: not connected to that namespace / not in that room
        if self._outgoing is not None:
            self._outgoing.push(payload["frame"])

    async def neffos_ask(self, request: dict[str, Any]) -> None:
        """Another instance asks this client; answer it without blocking this consumer."""
        task = asyncio.ensure_future(self._answer_remote_ask(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_remote_ask(self, request: dict[str, Any]) -> None:
        layer = self.channel_layer
        if request["namespace"] not in self.connected_namespaces:
            await layer.reply_error(request, protocol.ERR_BAD_NAMESPACE)
            return
        message = Message(request["namespace"], request["room"], request["event"], request["body"])
        try:
            body = await self.ask_client(message, float(request["timeout"]))
        except AskError as exc:
            await layer.reply_error(request, str(exc))
        except AskTimeout:
            pass  # the asker times out as well
        else:
            await layer.reply(request, {"body": body})
