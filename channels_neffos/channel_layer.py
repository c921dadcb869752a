"""The channel layer Channels talks to: validate, encode, find this loop's router, delegate.

:class:`NeffosChannelLayer` is the base of every layer in this package. Each call is checked
(with Channels' own wording, using real exceptions — never ``assert``), its message encoded once,
and handed to the *router* of the running event loop (:mod:`channels_neffos._core.router`),
which does all routing. Broker specifics live in a
:class:`~channels_neffos.transports.base.Transport` made by
:meth:`~channels_neffos.NeffosChannelLayer.make_transport`.

Guarantees (details per operation in ``docs/semantics.rst``):

* **Local first.** Messages between channels of the same process never touch the broker, and
  keep working while the broker is down.
* **Encoded once.** Every message is msgpack-encoded by the sender, even for local delivery, so a
  message that could not cross the broker (``TypeError``, ``MessageTooLarge``) fails everywhere.
* **At-most-once, FIFO per sender and channel.** See :mod:`channels_neffos._core.router` for
  where order between a send and a group_send can differ.
* **Bounded.** Each channel holds at most ``capacity`` messages (``channel_capacity`` globs
  override it). ``ChannelFull`` is raised where the sender can know (channels of its own process,
  Redis worker channels); elsewhere the message is dropped, logged (rate-limited) and counted in
  ``layer.counters``.
* **Per event loop.** One broker connection per loop, opened on first use; when the loop closes
  (``async_to_sync`` closes its loop after each call) the connection and every task close with it.
* **Cancellation-safe.** A cancelled ``receive()`` takes no message with it.
* **Sealed on the wire, if asked.** With ``symmetric_encryption_keys`` every broker payload is
  Fernet-encrypted by :class:`~channels_neffos.transports.encrypted.EncryptedTransport` around
  the broker's transport; local deliveries are never encrypted (they never leave the process).
"""

from __future__ import annotations

import abc
import asyncio
import secrets
import weakref
from collections import Counter
from collections.abc import Callable
from time import monotonic
from typing import Any

from channels.layers import BaseChannelLayer

from . import envelope
from ._core import asks
from ._core.history import GroupHistory, compile_history, history_for
from ._core.history_router import HistoryRouter
from ._core.roster import MEMBERS, PROCESS_STATS, SIZE
from ._core.router import Router, RouterHooks, State
from ._core.settings import LayerSettings
from ._core.validation import (
    INVALID_NAME,
    PREFIX_RE,
    RESERVED_KEYS,
    check_capacity,
    check_channel_name,
    check_group_name,
    check_message,
    positive_number,
    process_channel_owner,
)
from ._drops import DropLog
from .exceptions import BrokerUnavailable
from .signals import (
    broker_connection_lost,
    broker_connection_restored,
    messages_dropped,
    send_safely,
)
from .stats import LatencyHistogram, LayerStats, ProcessStats, reported
from .transports.base import IgnoredEvents, Transport, TransportEvents
from .transports.encrypted import EncryptedTransport, fernet_for

#: The key under which an ask's reply address travels inside the request message.
ASK_KEY = asks.ASK_KEY
DEFAULT_ASK_TIMEOUT = 5.0
_NAME_CACHE_SIZE = 10_000
#: After a failed connect, calls in the same event loop fail at once for this many seconds.
RETRY_CONNECT_AFTER = 1.0
_ASGI_KEY, _ASK_KEY = RESERVED_KEYS
_RUNNING = State.RUNNING


class NeffosChannelLayer(BaseChannelLayer, abc.ABC):  # type: ignore[misc]
    """A Channels layer on a pub/sub broker. Subclasses supply the transport."""

    #: ``capacity``: ``new_channel(prefix, capacity=N)`` gives that one channel its own capacity.
    #: ``presence``: ``group_members(group)`` and ``group_size(group)``.
    #: ``history``: the ``history`` option, positions and ``group_history(group, since)``.
    extensions = ["groups", "flush", "ask", "exclude", "capacity", "presence", "history"]
    #: Whether this layer's broker can keep history (the ``history`` option).
    keeps_history = True

    #: Bytes reserved for the envelope around a message body (pid, names, reply address).
    ENVELOPE_ALLOWANCE = 512
    #: Shown in errors, e.g. "Redis" or "NATS".
    broker_name = "the broker"
    invalid_name_error = INVALID_NAME

    def __init__(
        self,
        *,
        prefix: str = "neffos",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
        symmetric_encryption_keys: list[str | bytes] | None = None,
        presence: bool = True,
        history: dict[Any, dict[str, float]] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
            raise TypeError(
                f"prefix must be 1-50 characters from A-Z, a-z, 0-9, '_' and '-', got {prefix!r}"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise TypeError(f"capacity must be a positive integer, got {capacity!r}")
        if channel_capacity is not None and not isinstance(channel_capacity, dict):
            raise TypeError("channel_capacity must be a dict of {glob or regex: capacity}")
        if not isinstance(presence, bool):
            raise TypeError(f"presence must be True or False, got {presence!r}")
        super().__init__(
            expiry=positive_number("expiry", expiry),
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.group_expiry = positive_number("group_expiry", group_expiry)
        #: Which groups keep history, and how much (see :mod:`channels_neffos._core.history`).
        self.history = compile_history(history)
        if self.history and not self.keeps_history:
            raise ValueError(
                f"the history option is not available on {self.broker_name} in this version; "
                f"use a Redis layer for history groups"
            )
        self.prefix = prefix
        #: Whether processes keep an entry in the broker's registry (group_members, group_size).
        self.presence = presence
        # Kept only as Fernet objects: no attribute, repr or error shows a key.
        self._fernet = (
            None if symmetric_encryption_keys is None else fernet_for(symmetric_encryption_keys)
        )
        #: How many messages were dropped, and connections lost, by reason (see _drops.REASONS).
        self.counters: Counter[str] = Counter()
        self.drop_log = DropLog(self.counters, on_report=self._report_drops)
        #: Seconds to the answer of each answered ask (see stats()).
        self.ask_latency = LatencyHistogram()
        #: Chooses the pid of this layer's process on the running loop; MultiChannelLayer sets
        #: it so that all its children share one pid (and so one channel name) per loop.
        self.pid_source: Callable[[], str] | None = None
        self._routers: dict[asyncio.AbstractEventLoop, Router] = {}
        self._hooked_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._failed_starts: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[float, BrokerUnavailable]
        ] = weakref.WeakKeyDictionary()
        self._owners: dict[str, str] = {}  # see _owner_of
        self._valid_groups: set[str] = set()  # group names already validated (bounded)

    @abc.abstractmethod
    def make_transport(self, events: TransportEvents) -> Transport:
        """A new, unconnected transport for the current event loop."""

    def transport_for(self, events: TransportEvents) -> Transport:
        """:meth:`make_transport`, sealed by Fernet when ``symmetric_encryption_keys`` is set."""
        transport = self.make_transport(events)
        if self._fernet is None:
            return transport
        return EncryptedTransport(transport, self._fernet, events)

    @property
    def encrypted(self) -> bool:
        """Whether this layer encrypts what it sends through the broker."""
        return self._fernet is not None

    # -- this event loop's router --------------------------------------------------------------

    def _settings(self) -> LayerSettings:
        return LayerSettings(
            prefix=self.prefix,
            expiry=self.expiry,
            group_expiry=self.group_expiry,
            capacity=self.capacity,
            channel_capacity=tuple(self.channel_capacity),
            presence=self.presence,
            broker_name=self.broker_name,
            envelope_allowance=self.ENVELOPE_ALLOWANCE,
            history=self.history,
        )

    def _new_router(self, loop: asyncio.AbstractEventLoop) -> Router:
        hooks = RouterHooks(
            counters=self.counters,
            drop=self.drop_log,
            connection_lost=self._connection_lost,
            connection_restored=self._connection_restored,
            report=lambda: reported(loop, self),
        )
        pid = self.pid_source() if self.pid_source else secrets.token_hex(6)
        router = HistoryRouter if self.history else Router
        return router(self._settings(), pid, self.transport_for, hooks)

    async def _router(self) -> Router:
        """This event loop's router, connected (made and started on first use)."""
        loop = asyncio.get_running_loop()
        router = self._routers.get(loop)
        if router is not None and router.state is State.RUNNING:
            return router
        failed = self._failed_starts.get(loop)
        if failed is not None and monotonic() - failed[0] < RETRY_CONNECT_AFTER:
            raise failed[1].with_traceback(None)  # don't hammer a broker that just said no
        if router is None:
            router = self._routers[loop] = self._new_router(loop)
            if loop not in self._hooked_loops:
                self._hooked_loops.add(loop)
                self._close_with_loop(loop)
        try:
            await router.start()
        except BaseException as exc:
            if router.state is State.FAILED:  # not just this caller cancelled
                if self._routers.get(loop) is router:
                    del self._routers[loop]  # the next call connects afresh
                if isinstance(exc, BrokerUnavailable):
                    self._failed_starts[loop] = (monotonic(), exc)
            raise
        self._failed_starts.pop(loop, None)
        return router

    def _close_with_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's router when the loop closes (``async_to_sync``, ``asyncio.run``)."""
        original_close = loop.close

        def close() -> None:
            router = self._routers.pop(loop, None)
            if router is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(router.close())
            original_close()

        loop.close = close  # type: ignore[method-assign]

    def _connection_lost(self, pid: str, broker: str, reason: str) -> None:
        send_safely(
            broker_connection_lost, type(self), layer=self, broker=broker, pid=pid, reason=reason
        )

    def _connection_restored(self, pid: str, broker: str, down_for: float) -> None:
        send_safely(
            broker_connection_restored,
            type(self),
            layer=self,
            broker=broker,
            pid=pid,
            down_for=down_for,
        )

    def _report_drops(self, reason: str, count: int, where: str) -> None:
        send_safely(
            messages_dropped, type(self), layer=self, reason=reason, count=count, where=where
        )

    # -- validation ----------------------------------------------------------------------------

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        check_channel_name(name)
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        check_group_name(name)
        return True

    def _owner_of(self, channel: str) -> str:
        """The pid that owns a process channel, ``""`` for a worker channel (validated, cached).

        Consumers send to the same few channels over and over; remembering the answer saves
        the name checks on every send. The cache is bounded by starting afresh when full.
        """
        check_channel_name(channel)
        owner = process_channel_owner(channel) if "!" in channel else ""
        if len(self._owners) >= _NAME_CACHE_SIZE:
            self._owners.clear()
        self._owners[channel] = owner
        return owner

    def _message_in(self, body: bytes) -> dict[str, Any] | None:
        """The message a body holds; ``None`` if it holds none (a peer speaking another format),
        which is dropped and counted as garbage, never raised to the receiver."""
        try:
            message = envelope.unpack_body(body)
        except ValueError as exc:
            self.drop_log("garbage", f"an undecodable message body ({exc})")
            return None
        if type(message) is not dict:
            self.drop_log(
                "garbage", f"a message body that is a {type(message).__name__}, not a map"
            )
            return None
        return message

    # -- channel layer API ---------------------------------------------------------------------

    # send, receive and group_send are the hot paths: what they share is written out in each
    # (a check of the message, a look-up of the running loop's router) instead of in a helper,
    # because a function call is a tenth of what a local send costs.

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel``; ``ChannelFull`` if the sender can see it is full."""
        owner = self._owners.get(channel)
        if owner is None:
            owner = self._owner_of(channel)
        if type(message) is not dict or _ASGI_KEY in message or _ASK_KEY in message:
            check_message(message)  # raises, or accepts a dict subclass
        body = envelope.pack_body(message)
        router = self._routers.get(asyncio.get_running_loop())
        if router is None or router.state is not _RUNNING:
            router = await self._router()
        unfinished = router.send(channel, owner, body)
        if unfinished is not None:  # common: none (delivered, or queued for this turn's frames)
            await unfinished

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on ``channel`` (of this process, or a worker channel)."""
        router = self._routers.get(asyncio.get_running_loop())
        if router is not None and router.state is _RUNNING:
            body = router.take(channel)  # the hot path: a message waits (its name was checked)
            if body is not None:
                message = self._message_in(body)
                if message is not None:
                    return message
        owner = self._owners.get(channel)
        if owner is None:
            owner = self._owner_of(channel)
        if router is None or router.state is not _RUNNING:
            router = await self._router()
        while True:
            body = router.take(channel)
            if body is None:
                body = await router.receive(channel, owner)
            message = self._message_in(body)
            if message is not None:
                return message  # else it was dropped: wait for the next one

    async def new_channel(self, prefix: str = "specific", *, capacity: int | None = None) -> str:
        """A new channel name that only this process receives on.

        ``capacity`` (the ``capacity`` extension) overrides ``capacity``/``channel_capacity`` for
        this one channel: a channel that gathers messages for many receivers (the namespaces'
        per-process fan-out) needs more room than one consumer's.
        """
        check_capacity(capacity)
        prefix = prefix.rstrip(".")
        check_channel_name(f"{prefix}.{'0' * 12}!{'0' * 16}")
        router = await self._router()
        return await router.new_channel(prefix, capacity)

    async def open_channel(self, channel: str, *, capacity: int | None = None) -> None:
        """Start receiving for a channel name that carries this process's pid, made elsewhere.

        ``MultiChannelLayer`` uses this so every child receives the name one child made.
        """
        check_channel_name(channel)
        check_capacity(capacity)
        router = await self._router()
        if process_channel_owner(channel) != router.pid:
            raise ValueError(f"{channel!r} does not carry this process's pid")
        await router.open_channel(channel, capacity)

    async def flush(self) -> None:
        """Forget this process's messages and groups, and delete stored worker queues."""
        await (await self._router()).flush()

    async def close(self) -> None:
        """Close this event loop's connection. The layer reconnects if used again."""
        router = self._routers.pop(asyncio.get_running_loop(), None)
        if router is not None:
            await router.close()

    # -- groups extension ----------------------------------------------------------------------

    def _member_owner(self, group: str, channel: str) -> str | None:
        """The owner of ``channel`` as a group member, validated; ``None`` for a worker
        channel (never a member)."""
        check_group_name(group)
        check_channel_name(channel)
        return process_channel_owner(channel) if "!" in channel else None

    async def group_add(self, group: str, channel: str) -> None:
        """Add a process-specific channel to ``group`` for ``group_expiry`` seconds."""
        owner = self._member_owner(group, channel)
        if owner is None:
            raise ValueError(
                f"cannot add worker channel {channel!r} to group {group!r}: channels_neffos "
                f"groups hold process-specific channels (from new_channel()); send to the "
                f"worker channel directly instead"
            )
        await (await self._router()).group_add(group, channel, owner)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing sent to the group reaches it afterwards."""
        owner = self._member_owner(group, channel)
        if owner is not None:  # worker channels are never members (see group_add)
            await (await self._router()).group_discard(group, channel, owner)

    async def group_send(
        self, group: str, message: dict[str, Any], *, exclude: str | None = None
    ) -> None:
        """Deliver to local members now, and publish once for members in other processes.

        ``exclude`` (a channels_neffos extension) names one channel that must not receive the
        message — typically the sender's own — and is honoured by every process.
        """
        if group not in self._valid_groups:  # validated once: apps send to few groups often
            check_group_name(group)
            if len(self._valid_groups) >= _NAME_CACHE_SIZE:
                self._valid_groups.clear()
            self._valid_groups.add(group)
        if type(message) is not dict or _ASGI_KEY in message or _ASK_KEY in message:
            check_message(message)
        body = envelope.pack_body(message)
        if exclude is not None:
            check_channel_name(exclude)
        router = self._routers.get(asyncio.get_running_loop())
        if router is None or router.state is not _RUNNING:
            router = await self._router()
        unfinished = router.group_send(group, body, exclude)
        if unfinished is not None:
            await unfinished

    # -- history extension ---------------------------------------------------------------------

    def has_history(self, group: str) -> bool:
        """Whether ``group`` keeps history (a pattern of the ``history`` option matches it)."""
        return bool(self.history) and history_for(self.history, group) is not None

    async def group_history(
        self, group: str, since: dict[str, Any] | None = None, limit: int | None = None
    ) -> GroupHistory:
        """What ``group``'s history holds, from any process (member or not).

        Without ``since``: the last ``limit`` messages kept (all if ``None``). With ``since`` (a
        ``"__position__"`` as a message carried it): the messages after it (the first
        ``limit``), and ``recovered`` says whether they are *all* that followed it —
        ``False`` if ``since`` is of another epoch or older than what is kept (the messages
        are then what is kept). ``ValueError`` for a group without history.
        """
        check_group_name(group)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        router = await self._router()
        limits = router.history_limits(group) if isinstance(router, HistoryRouter) else None
        if limits is None or not isinstance(router, HistoryRouter):
            raise ValueError(
                f"group {group!r} keeps no history: add a pattern that matches it to the "
                f"layer's history option"
            )
        found, complete = await router.group_history(group, limits, since, limit)
        messages = []
        for offset, payload in found.entries:
            try:
                body = envelope.decode(payload).body
                message = self._message_in(envelope.with_position(body, found.epoch or "", offset))
            except ValueError as exc:
                self.drop_log("garbage", f"{group} history offset {offset}: {exc}")
                message = None
            if message is not None:
                messages.append(message)
        return GroupHistory(found.epoch, found.offset, messages, complete)

    # -- presence extension --------------------------------------------------------------------

    async def group_members(self, group: str) -> list[str]:
        """The channels in ``group`` on every process, sorted.

        Exact as soon as ``group_add``/``group_discard`` have returned, from any process; see
        :mod:`channels_neffos._core.roster` for how, and for the bounds after a crash. Raises
        ``PresenceUnavailable`` if the broker keeps no registry of processes (NATS without
        JetStream).
        """
        check_group_name(group)
        answers = await (await self._router()).gather(MEMBERS, group)
        return sorted({channel for answer in answers for channel in answer})

    async def group_size(self, group: str) -> int:
        """How many channels are in ``group`` on every process (as ``group_members``)."""
        check_group_name(group)
        return sum(await (await self._router()).gather(SIZE, group))

    # -- status --------------------------------------------------------------------------------

    def stats(self) -> LayerStats:
        """A snapshot of this layer in this OS process, without the broker (see
        :mod:`channels_neffos.stats`)."""
        return LayerStats(
            backend=type(self).__name__,
            broker=self._broker_url(),
            prefix=self.prefix,
            counters=dict(self.counters),
            processes=[router.snapshot() for router in list(self._routers.values())],
            ask_latency=self.ask_latency.snapshot(),
        )

    async def ping(self, timeout: float = 5.0) -> float:
        """Seconds a message takes from this process through the broker and back; raises
        ``BrokerUnavailable`` if the broker is down or the message is not back within
        ``timeout`` seconds. For health checks (``manage.py neffos ping``)."""
        timeout = positive_number("timeout", timeout)
        return await (await self._router()).ping(timeout)

    def _broker_url(self) -> str:
        for router in list(self._routers.values()):
            return router.url
        # No router yet: a transport only to read its address (it connects nothing until used).
        return self.make_transport(IgnoredEvents()).url

    async def instances(self) -> list[ProcessStats]:
        """A snapshot of every live process of this prefix, on every instance, this one first:
        each answers with its own :class:`~channels_neffos.stats.ProcessStats`. Raises
        ``PresenceUnavailable`` as ``group_members`` does."""
        answers = await (await self._router()).gather(PROCESS_STATS, "")
        return [ProcessStats.from_dict(answer) for answer in answers]

    # -- ask extension -------------------------------------------------------------------------

    async def ask(
        self, channel: str, message: dict[str, Any], timeout: float = DEFAULT_ASK_TIMEOUT
    ) -> dict[str, Any]:
        """Send ``message`` to ``channel`` and return the receiver's reply.

        The receiver sees ``message`` (routed by its ``type`` as usual) and answers with
        :meth:`reply` or :meth:`reply_error`. Raises ``NoResponders`` at once when nothing holds
        the channel (as far as the broker can tell: on Redis an unread *worker* channel cannot be
        told from a slow one and ends in ``AskTimeout``), ``AskTimeout`` when no reply comes
        within ``timeout`` seconds, ``AskError`` when the receiver replied with an error.
        """
        check_channel_name(channel)
        check_message(message)
        timeout = positive_number("timeout", timeout)
        owner = process_channel_owner(channel) if "!" in channel else ""
        router = await self._router()
        started = monotonic()
        answer = await router.ask(channel, owner, message, timeout)
        self.ask_latency.observe(monotonic() - started)
        return answer

    async def group_ask(
        self, group: str, message: dict[str, Any], timeout: float = DEFAULT_ASK_TIMEOUT
    ) -> dict[str, Any]:
        """Send ``message`` to every member of ``group``; return the first reply.

        ``NoResponders`` at once when no process has members in the group; later replies are
        dropped.
        """
        check_group_name(group)
        check_message(message)
        timeout = positive_number("timeout", timeout)
        router = await self._router()
        started = monotonic()
        answer = await router.group_ask(group, message, timeout)
        self.ask_latency.observe(monotonic() - started)
        return answer

    async def reply(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Answer an ask. ``request`` is the message as received. A second reply is ignored."""
        check_message(response)
        await (await self._router()).reply(request, envelope.REPLY_OK, response)

    async def reply_error(self, request: dict[str, Any], text: str) -> None:
        """Answer an ask with an error: the asker raises ``AskError(text)``."""
        if not isinstance(text, str):
            raise TypeError(f"the error must be a str, not {type(text).__name__}")
        await (await self._router()).reply(request, envelope.REPLY_ERROR, text)

    #: ``(reply_to, asker_pid)`` of a received ask; ``ValueError`` if it is not an ask.
    ask_info = staticmethod(asks.ask_info)
    #: Whether a received message is an ask.
    is_ask = staticmethod(asks.is_ask)
