"""The channel layer engine shared by every broker: validation, per-event-loop processes, the API.

This is the class Channels talks to. It validates every call (with Channels' own wording, using
real exceptions — never ``assert``), finds or starts this event loop's :class:`LayerProcess`,
and hands it the already-encoded message. Broker specifics live in a
:class:`~channels_neffos.transports.base.Transport` created by :meth:`make_transport`.

Guarantees (details per operation in ``docs/semantics.rst``):

* **Local first.** Messages between channels of the same process never touch the broker, and
  keep working while the broker is down.
* **Encoded once.** Every message is msgpack-encoded by the sender, even for local delivery, so a
  message that could not cross the broker (``TypeError``, ``MessageTooLarge``) fails everywhere.
* **At-most-once, FIFO per sender and channel.** See :mod:`channels_neffos.process` for where
  order between a send and a group_send can differ.
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
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from channels.layers import BaseChannelLayer

from . import asks, envelope
from ._drops import DropLog
from .exceptions import BrokerUnavailable
from .presence import MEMBERS as PRESENCE_MEMBERS
from .presence import PROCESS_STATS
from .presence import SIZE as PRESENCE_SIZE
from .process import LayerProcess, owner_pid
from .signals import messages_dropped, send_safely
from .stats import (
    LatencyHistogram,
    LayerStats,
    ProcessStats,
    broker_round_trip,
    process_stats,
)
from .transports.base import IgnoredEvents, Transport, TransportEvents
from .transports.encrypted import EncryptedTransport, fernet_for
from .validation import CHANNEL_RE, GROUP_RE, PREFIX_RE, check_capacity, positive_number

#: The key under which an ask's reply address travels inside the request message.
ASK_KEY = asks.ASK_KEY
#: Keys a message may not carry: Channels reserves the first, this package the second.
RESERVED_KEYS = ("__asgi_channel__", ASK_KEY)
DEFAULT_ASK_TIMEOUT = 5.0
_NAME_CACHE_SIZE = 10_000
#: After a failed connect, calls in the same event loop fail at once for this many seconds.
RETRY_CONNECT_AFTER = 1.0


class NeffosChannelLayer(BaseChannelLayer, abc.ABC):  # type: ignore[misc]
    """A Channels layer on a pub/sub broker. Subclasses supply the transport."""

    #: ``capacity``: ``new_channel(prefix, capacity=N)`` gives that one channel its own capacity.
    #: ``presence``: ``group_members(group)`` and ``group_size(group)`` (see presence.py).
    extensions = ["groups", "flush", "ask", "exclude", "capacity", "presence"]

    #: Bytes reserved for the envelope around a message body (pid, names, reply address).
    ENVELOPE_ALLOWANCE = 512
    #: Shown in errors, e.g. "Redis" or "NATS".
    broker_name = "the broker"

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
    ) -> None:
        if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
            raise TypeError(
                f"prefix must be 1-50 characters from A-Z, a-z, 0-9, '_' and '-', got {prefix!r}"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise TypeError(f"capacity must be a positive integer, got {capacity!r}")
        if channel_capacity is not None and not isinstance(channel_capacity, dict):
            raise TypeError("channel_capacity must be a dict of {glob or regex: capacity}")
        super().__init__(
            expiry=positive_number("expiry", expiry),
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.group_expiry = positive_number("group_expiry", group_expiry)
        self.prefix = prefix
        if not isinstance(presence, bool):
            raise TypeError(f"presence must be True or False, got {presence!r}")
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
        self.sweep_interval = min(self.expiry, 30.0)
        self._processes: dict[asyncio.AbstractEventLoop, LayerProcess] = {}
        self._owners: dict[str, str] = {}  # see _owner_of
        self._valid_groups: set[str] = set()  # group names already validated (bounded)
        #: Chooses the pid of this layer's process on the running loop; MultiChannelLayer sets
        #: it so that all its children share one pid (and so one channel name) per loop.
        self.pid_source: Callable[[], str] | None = None
        self._starting: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}
        self._hooked_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._failed_starts: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[float, BrokerUnavailable]
        ] = weakref.WeakKeyDictionary()

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

    # -- per-event-loop processes --------------------------------------------------------------

    async def _process(self) -> LayerProcess:
        loop = asyncio.get_running_loop()
        process = self._processes.get(loop)
        if process is not None and process.started:
            return process
        failed = self._failed_starts.get(loop)
        if failed is not None and monotonic() - failed[0] < RETRY_CONNECT_AFTER:
            raise failed[1].with_traceback(None)  # don't hammer a broker that just said no
        if process is None:
            process = LayerProcess(self, self.pid_source() if self.pid_source else None)
            self._processes[loop] = process
            if loop not in self._hooked_loops:
                self._hooked_loops.add(loop)
                self._close_with_loop(loop)
        starting = self._starting.get(loop)
        if starting is None:
            starting = self._starting[loop] = asyncio.ensure_future(process.start())
        try:
            await asyncio.shield(starting)
        except BaseException as exc:
            if starting.done():
                self._starting.pop(loop, None)
                if not starting.cancelled() and starting.exception() is not None:
                    self._processes.pop(loop, None)  # the next call connects afresh
                    if isinstance(exc, BrokerUnavailable):
                        self._failed_starts[loop] = (monotonic(), exc)
            raise
        self._starting.pop(loop, None)
        self._failed_starts.pop(loop, None)
        return process

    def _close_with_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's process when the loop closes (``async_to_sync``, ``asyncio.run``)."""
        original_close = loop.close

        def close() -> None:
            process = self._processes.pop(loop, None)
            if process is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(process.close())
            original_close()

        loop.close = close  # type: ignore[method-assign]

    # -- validation ----------------------------------------------------------------------------

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        if not isinstance(name, str) or len(name) >= self.MAX_NAME_LENGTH:
            raise TypeError(self.invalid_name_error.format("Channel"))
        if not CHANNEL_RE.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        if not isinstance(name, str) or len(name) >= self.MAX_NAME_LENGTH:
            raise TypeError(self.invalid_name_error.format("Group"))
        if not GROUP_RE.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        return True

    @staticmethod
    def _require_valid_message(message: Any) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        for key in RESERVED_KEYS:
            if key in message:
                raise ValueError(f"message must not contain the reserved key {key!r}")

    def _require_process_channel_pid(self, channel: str) -> str:
        pid = owner_pid(channel)
        if pid is None:
            raise ValueError(
                f"{channel!r} is not a process-specific channel of this layer: names with '!' "
                f"must come from this layer's new_channel()"
            )
        return pid

    # -- channel layer API ---------------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel``; ``ChannelFull`` if the sender can see it is full."""
        owner = self._owners.get(channel)
        if owner is None:
            owner = self._owner_of(channel)
        if type(message) is not dict or "__asgi_channel__" in message or ASK_KEY in message:
            self._require_valid_message(message)  # raises, or accepts a dict subclass
        body = envelope.pack_body(message)
        process = self._processes.get(asyncio.get_running_loop())
        if process is None or not process.started:
            process = await self._process()
        if len(body) > process.max_body:
            process.check_size(body)
        if not owner:
            await process.send_to_worker_channel(channel, body)
        elif owner == process.pid:
            process.deliver(channel, body, raise_full=True)
        else:
            subject, header, frame_key = process.channel_route(owner, channel)
            payload = envelope.with_body(header, body)
            if not process.outbox.collect(subject, payload, frame_key):  # common: no await
                await process.outbox.publish(subject, payload, frame_key)

    def _owner_of(self, channel: str) -> str:
        """The pid that owns a process channel, ``""`` for a worker channel (validated, cached).

        Consumers send to the same few channels over and over; remembering the answer saves
        the name checks on every send. The cache is bounded by starting afresh when full.
        """
        self.require_valid_channel_name(channel)
        owner = self._require_process_channel_pid(channel) if "!" in channel else ""
        if len(self._owners) >= _NAME_CACHE_SIZE:
            self._owners.clear()
        self._owners[channel] = owner
        return owner

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next message on ``channel`` (of this process, or a worker channel)."""
        process = self._processes.get(asyncio.get_running_loop())
        if process is not None and process.listening and "!" in channel:
            mailbox = process.mailboxes.get(channel)
            if mailbox is not None:  # the hot path: a channel of ours, already checked
                body = mailbox.get_nowait()
                message = self._message_in(body if body is not None else await mailbox.get())
                if message is not None:
                    return message  # else it was dropped: wait for the next one below
        self.require_valid_channel_name(channel)
        process = await self._process()
        if "!" in channel:
            if self._require_process_channel_pid(channel) != process.pid:
                raise ValueError(
                    f"cannot receive on {channel!r}: it belongs to another process (or event "
                    f"loop); receive only on channels this process made with new_channel()"
                )
            mailbox = process.mailbox(channel)
            await process.listen()
        else:
            mailbox = process.mailbox(channel)
            process.ensure_fetcher(channel, mailbox)
        while True:
            message = self._message_in(await mailbox.get())
            if message is not None:
                return message

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

    async def new_channel(self, prefix: str = "specific", *, capacity: int | None = None) -> str:
        """A new channel name that only this process receives on.

        ``capacity`` (the ``capacity`` extension) overrides ``capacity``/``channel_capacity`` for
        this one channel: a channel that gathers messages for many receivers (the namespaces'
        per-process fan-out) needs more room than one consumer's.
        """
        check_capacity(capacity)
        prefix = prefix.rstrip(".")
        process = await self._process()
        await process.listen()
        process.maybe_sweep()
        channel = f"{prefix}.{process.pid}!{secrets.token_hex(8)}"
        self.require_valid_channel_name(channel)
        process.mailbox(channel, capacity)
        return channel

    async def open_channel(self, channel: str, *, capacity: int | None = None) -> None:
        """Start receiving for a channel name that carries this process's pid, made elsewhere.

        ``MultiChannelLayer`` uses this so every child receives the name one child made.
        """
        self.require_valid_channel_name(channel)
        check_capacity(capacity)
        process = await self._process()
        if self._require_process_channel_pid(channel) != process.pid:
            raise ValueError(f"{channel!r} does not carry this process's pid")
        await process.listen()
        process.mailbox(channel, capacity)

    async def flush(self) -> None:
        """Forget this process's messages and groups, and delete stored worker queues."""
        process = await self._process()
        await process.flush()

    async def close(self) -> None:
        """Close this event loop's connection. The layer reconnects if used again."""
        loop = asyncio.get_running_loop()
        process = self._processes.pop(loop, None)
        if process is not None:
            await process.close()

    # -- groups extension ----------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a process-specific channel to ``group`` for ``group_expiry`` seconds."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if "!" not in channel:
            raise ValueError(
                f"cannot add worker channel {channel!r} to group {group!r}: channels_neffos "
                f"groups hold process-specific channels (from new_channel()); send to the "
                f"worker channel directly instead"
            )
        pid = self._require_process_channel_pid(channel)
        process = await self._process()
        if pid == process.pid:
            await process.group_add_local(group, channel)
        else:
            await process.change_remote_membership("group_add", group, channel, pid)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing sent to the group reaches it afterwards."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if "!" not in channel:
            return  # worker channels are never members (see group_add)
        pid = self._require_process_channel_pid(channel)
        process = await self._process()
        if pid == process.pid:
            await process.group_discard_local(group, channel)
        else:
            await process.change_remote_membership("group_discard", group, channel, pid)

    async def group_send(
        self, group: str, message: dict[str, Any], *, exclude: str | None = None
    ) -> None:
        """Deliver to local members now, and publish once for members in other processes.

        ``exclude`` (a channels_neffos extension) names one channel that must not receive the
        message — typically the sender's own — and is honoured by every process.
        """
        if group not in self._valid_groups:  # validated once: apps send to few groups often
            self.require_valid_group_name(group)
            if len(self._valid_groups) >= _NAME_CACHE_SIZE:
                self._valid_groups.clear()
            self._valid_groups.add(group)
        if type(message) is not dict or "__asgi_channel__" in message or ASK_KEY in message:
            self._require_valid_message(message)
        if exclude is not None:
            self.require_valid_channel_name(exclude)
        body = envelope.pack_body(message)
        process = await self._process()
        if len(body) > process.max_body:
            process.check_size(body)
        process.deliver_to_group(group, body, exclude)
        subject, header, frame_key = process.group_route(group)
        if exclude is None:
            payload = envelope.with_body(header, body)
        else:
            payload = envelope.encode(
                envelope.Envelope(envelope.GROUP, process.pid, group, body, None, None, exclude)
            )
        if not process.outbox.collect(subject, payload, frame_key):
            await process.outbox.publish(subject, payload, frame_key)

    # -- presence extension --------------------------------------------------------------------

    async def group_members(self, group: str) -> list[str]:
        """The channels in ``group`` on every process, sorted.

        Exact as soon as ``group_add``/``group_discard`` have returned, from any process; see
        :mod:`channels_neffos.presence` for how, and for the bounds after a crash. Raises
        ``PresenceUnavailable`` if the broker keeps no registry of processes (NATS without
        JetStream).
        """
        self.require_valid_group_name(group)
        process = await self._process()
        answers = await process.presence.gather(PRESENCE_MEMBERS, group)
        return sorted({channel for answer in answers for channel in answer})

    async def group_size(self, group: str) -> int:
        """How many channels are in ``group`` on every process (as ``group_members``)."""
        self.require_valid_group_name(group)
        process = await self._process()
        return sum(await process.presence.gather(PRESENCE_SIZE, group))

    # -- status --------------------------------------------------------------------------------

    def stats(self) -> LayerStats:
        """A snapshot of this layer in this OS process, without the broker (see
        :mod:`channels_neffos.stats`)."""
        return LayerStats(
            backend=type(self).__name__,
            broker=self._broker_url(),
            prefix=self.prefix,
            counters=dict(self.counters),
            processes=[process_stats(process) for process in list(self._processes.values())],
            ask_latency=self.ask_latency.snapshot(),
        )

    async def ping(self, timeout: float = 5.0) -> float:
        """Seconds a message takes from this process through the broker and back; raises
        ``BrokerUnavailable`` if the broker is down or the message is not back within
        ``timeout`` seconds. For health checks (``manage.py neffos ping``)."""
        timeout = positive_number("timeout", timeout)
        process = await self._process()
        return await broker_round_trip(process, await self.new_channel("ping"), timeout)

    def _report_drops(self, reason: str, count: int, where: str) -> None:
        send_safely(
            messages_dropped, type(self), layer=self, reason=reason, count=count, where=where
        )

    def _broker_url(self) -> str:
        for process in list(self._processes.values()):
            return process.transport.url
        # No process yet: a transport only to read its address (it connects nothing until used).
        return self.make_transport(IgnoredEvents()).url

    async def instances(self) -> list[ProcessStats]:
        """A snapshot of every live process of this prefix, on every instance, this one first:
        each answers with its own :class:`~channels_neffos.stats.ProcessStats`. Raises
        ``PresenceUnavailable`` as ``group_members`` does."""
        process = await self._process()
        answers = await process.presence.gather(PROCESS_STATS, "")
        return [ProcessStats.from_dict(answer) for answer in answers]

    # -- ask extension (channels_neffos.asks) --------------------------------------------------

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
        self.require_valid_channel_name(channel)
        self._require_valid_message(message)
        timeout = positive_number("timeout", timeout)
        process = await self._process()
        owner = self._require_process_channel_pid(channel) if "!" in channel else None
        return await self._timed(asks.ask_channel(process, channel, owner, message, timeout))

    async def group_ask(
        self, group: str, message: dict[str, Any], timeout: float = DEFAULT_ASK_TIMEOUT
    ) -> dict[str, Any]:
        """Send ``message`` to every member of ``group``; return the first reply.

        ``NoResponders`` at once when no process has members in the group; later replies are
        dropped.
        """
        self.require_valid_group_name(group)
        self._require_valid_message(message)
        timeout = positive_number("timeout", timeout)
        process = await self._process()
        return await self._timed(asks.ask_group(process, group, message, timeout))

    async def _timed(self, request: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        started = monotonic()
        answer = await request
        self.ask_latency.observe(monotonic() - started)
        return answer

    async def reply(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Answer an ask. ``request`` is the message as received. A second reply is ignored."""
        self._require_valid_message(response)
        await asks.send_reply(await self._process(), request, envelope.REPLY_OK, response)

    async def reply_error(self, request: dict[str, Any], text: str) -> None:
        """Answer an ask with an error: the asker raises ``AskError(text)``."""
        if not isinstance(text, str):
            raise TypeError(f"the error must be a str, not {type(text).__name__}")
        await asks.send_reply(await self._process(), request, envelope.REPLY_ERROR, text)

    #: ``(reply_to, asker_pid)`` of a received ask; ``ValueError`` if it is not an ask.
    ask_info = staticmethod(asks.ask_info)
    #: Whether a received message is an ask.
    is_ask = staticmethod(asks.is_ask)
