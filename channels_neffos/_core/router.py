"""One layer on one event loop: the router every call of the layer goes through.

The public layer (:class:`~channels_neffos.NeffosChannelLayer`) validates a call, encodes the
message once and finds the router of the running event loop — a *process*, with its own random
``pid`` and its own broker connection — then hands the call over. The router owns the routing
and delegates the rest to its parts, each of which gets settings and narrow callables, never
the router: :class:`~.mailboxes.Mailboxes` (local delivery), :class:`~.groups.LocalGroups`
(membership and group subscriptions), :class:`~.outbox.Outbox` (coalesced publishes),
:class:`~.requests.Requests` (request correlation), :class:`~.fetchers.WorkerFetchers`
(worker-channel queues), :class:`~.roster.Roster` (presence), and the transport (the broker).
Everything that owns sockets, tasks or futures lives here, so closing an event loop closes
exactly what that loop opened.

Routing (subjects in :mod:`.names`):

* A process channel ``<prefix>.<pid>!<id>`` belongs to the process whose ``pid`` it names. Sent
  from its owner, it goes straight into the local mailbox and never touches the broker; sent from
  elsewhere, it is published once to the owner's channel subject, which the owner receives
  through its single wildcard subscription.
* A group is local membership plus one subscription per group while it has local members.
  ``group_send`` delivers to local members directly and publishes once; every process delivers
  what it receives to its own members (``exclude`` left out) and drops the echo of its own
  publishes.
* A worker channel (no ``!``) is a broker queue; a receive pulls one message at a time into a
  local mailbox, so each message reaches exactly one reader in the whole system.
* ``group_add``/``group_discard`` for a channel owned by another process are forwarded to the
  owner as a request and return once the owner confirmed, so a ``group_send`` issued right after
  reaches the channel.
* Requests (asks, membership changes, presence questions) flush the outbox before they are
  published, so a request never overtakes what this process sent before it.

A layer with a ``history`` option gets a :class:`~.history_router.HistoryRouter`, a subclass:
its ``group_send`` to a group with history goes to the broker first, for the group's position,
and its members get it from there in the group's one order (:mod:`.history`).

Delivery is at-most-once (history groups: see :mod:`.history`). Order is FIFO per sender and
channel; a message sent to a channel and a ``group_send`` reaching the same channel travel on
different subjects, so their relative order
holds locally and on a single Redis server (one pub/sub connection) but not necessarily on NATS
or across sharded Redis servers. Every loss the router can see is counted (``layer.counters``)
and logged at a limited rate (:mod:`channels_neffos._drops`).

Lifecycle (:class:`State`): ``NEW`` → ``STARTING`` → ``RUNNING`` → ``CLOSING`` → ``CLOSED``; a
failed start ends in ``FAILED`` (the layer makes a new router for the next call). Closing fails
every waiting ``receive()`` and request with ``LayerClosed``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from channels.exceptions import ChannelFull

from .. import envelope
from .._aio import BackgroundTasks, SharedAttempt
from ..envelope import CHANNEL, CONTROL, GROUP, REPLY, Envelope
from ..exceptions import BrokerUnavailable, LayerClosed, MessageTooLarge, NoResponders
from ..stats import LARGEST_GROUPS, ProcessStats
from ..transports.base import Subject, Transport, TransportEvents
from .asks import ask_body, ask_info
from .broker_status import BrokerStatus
from .fetchers import WorkerFetchers
from .groups import LocalGroups
from .mailboxes import Drop, Mailbox, Mailboxes
from .names import Names
from .outbox import FRAME_BYTES, Outbox
from .requests import Requests
from .roster import ANSWER_TIMEOUT, MEMBERS, PROCESS_STATS, QUESTIONS, Roster
from .settings import LayerSettings
from .validation import check_group_name

logger = logging.getLogger("channels_neffos")

#: How long group_add/group_discard wait for the owner of a remote channel to confirm.
CONTROL_TIMEOUT = 5.0
#: How many channel and group routes a router remembers (see channel_route).
_ROUTE_CACHE_SIZE = 10_000
#: Where a publish goes: (subject, envelope header, frame key) — see Outbox.collect.
Route = tuple[Subject, bytes, str]


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  #: the broker could not be reached; the layer starts a new router
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class RouterHooks:
    """What a router may call on its owner's behalf (narrow callables, never the owner)."""

    counters: Counter[str]
    #: Counts and logs a drop: ``drop(reason, where, count)`` (see channels_neffos._drops).
    drop: Drop
    #: The broker connection went down (``pid``, ``broker``, ``reason``) / came back
    #: (``pid``, ``broker``, ``down_for``): sends the layer's signals.
    connection_lost: Callable[[str, str, str], None]
    connection_restored: Callable[[str, str, float], None]
    #: Extra ProcessStats fields (what is built on the layer reports: see stats.add_reporter).
    report: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class _Events:
    """The router's side of :class:`~channels_neffos.transports.base.TransportEvents`."""

    connection_lost: Callable[[BaseException | None], None]
    connection_restored: Callable[[], None]
    dropped: Callable[[str, str], None]
    request_failed: Callable[[str, Exception], None]


class Router:
    """One layer's state and routing on one event loop (see the module docstring)."""

    def __init__(
        self,
        settings: LayerSettings,
        pid: str,
        make_transport: Callable[[TransportEvents], Transport],
        hooks: RouterHooks,
    ) -> None:
        self.settings = settings
        self.pid = pid
        self.state = State.NEW
        self._hooks = hooks
        self._drop = hooks.drop
        events = _Events(
            self._connection_lost, self._connection_restored, self._dropped, self._request_failed
        )
        self.transport = make_transport(events)
        self.url = self.transport.url
        self.names = Names(
            settings.prefix,
            self.transport.subject,
            self.transport.wildcard,
            patterns=self.transport.pattern_subscriptions,
        )
        self.status = BrokerStatus(
            hooks.counters,
            lambda reason: hooks.connection_lost(pid, self.url, reason),
            lambda down_for: hooks.connection_restored(pid, self.url, down_for),
        )
        self.background = BackgroundTasks(logger, "a channel layer background task")
        self.mailboxes = Mailboxes(settings.capacity_for, settings.expiry, hooks.drop)
        self.outbox = Outbox(self.transport.publish, self._publish_lost)
        self.groups = LocalGroups(
            settings.group_expiry,
            self._subscribe_group,
            self._unsubscribe_group,
            self.background.spawn,
        )
        self.requests = Requests(lambda: self.names.new_reply_address(pid), self._count)
        self.fetchers = WorkerFetchers(self._pop, settings.expiry, hooks.drop)
        self.roster = Roster(
            self.transport.registry,
            pid,
            self.url,
            self._ask_process,
            self.answer,
            self._count,
            enabled=settings.presence,
        )
        self._starting = SharedAttempt(self._start)
        self._listening = SharedAttempt(self._listen)
        self._channel_routes: dict[str, Route] = {}
        self._group_routes: dict[str, Route] = {}
        self._inboxes: dict[str, Subject] = {}
        self._last_sweep = monotonic()
        self._sweep_interval = settings.sweep_interval  # read for every broker message
        self.started_at, self.started_monotonic = time.time(), monotonic()
        self.loop = asyncio.get_running_loop()
        #: The largest user body whose envelope still fits the broker (known once connected).
        self.max_body = 0
        #: Messages that arrived from the broker, and those published without the outbox (worker
        #: channel pushes, requests): for stats.
        self.received = 0
        self.published_directly = 0

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    async def start(self) -> None:
        """Connect (once; concurrent callers share the attempt)."""
        if self.state is not State.RUNNING:
            if self.state in (State.CLOSING, State.CLOSED):
                raise LayerClosed(f"the router of process {self.pid} ({self.state.value})")
            await self._starting()

    async def _start(self) -> None:
        self.state = State.STARTING
        try:
            await self.transport.connect()
        except BaseException:
            self.state = State.FAILED
            raise
        max_payload = self.transport.max_payload
        self.max_body = max_payload - self.settings.envelope_allowance
        self.outbox.max_frame = min(FRAME_BYTES, max_payload)
        self.state = State.RUNNING

    async def close(self) -> None:
        """Close everything this router opened; waiting receives and requests get
        ``LayerClosed``. Idempotent."""
        if self.state in (State.CLOSING, State.CLOSED):
            return
        self.state = State.CLOSING
        await self._starting.cancel()
        await self.fetchers.close()
        await self.background.close()
        await self._listening.cancel()
        self.requests.fail_all()
        self.mailboxes.fail_waiters(LayerClosed)
        await self.roster.close()  # retracted: this process's members are gone at once
        await self.outbox.close()
        await self.transport.close()
        self.state = State.CLOSED

    @property
    def listening(self) -> bool:
        """Whether the process's wildcard subscription is in place."""
        return self._listening.succeeded

    async def listen(self) -> None:
        """Subscribe this process's wildcard once; every concurrent caller waits for it."""
        if not self._listening.succeeded:
            await self._listening()

    async def _listen(self) -> None:
        await self.transport.subscribe(self.names.process(self.pid), self._on_process_message)

    # -- transport events ----------------------------------------------------------------------

    def _connection_lost(self, reason: BaseException | None) -> None:
        self.status.lost(reason)

    def _connection_restored(self) -> None:
        self.status.restored()
        if self.state is State.RUNNING:
            self.background.spawn(self.roster.announce_again())  # a restarted broker forgot us

    def _dropped(self, reason: str, where: str) -> None:
        self._drop(reason, where, 1)

    def _request_failed(self, reply_to: str, error: Exception) -> None:
        self.requests.fail(reply_to, error)

    def _count(self, event: str) -> None:
        self._hooks.counters[event] += 1

    def _publish_lost(self, subject: Subject, count: int) -> None:
        self._drop("broker_down", f"{subject.name} ({self.url})", count)

    # -- routes --------------------------------------------------------------------------------

    def channel_route(self, owner: str, channel: str) -> Route:
        """The subject of ``channel`` (owned by ``owner``), the envelope header for plain sends
        to it from this process, and its frame key — ``owner``, so that sends to several
        channels of one process share frames. Remembered: building (and escaping) a subject and
        encoding a header cost more than the rest of a send."""
        route = self._channel_routes.get(channel)
        if route is None:
            subject = self.names.channel(owner, channel)
            route = self._remember(self._channel_routes, channel, CHANNEL, subject, owner)
        return route

    def group_route(self, group: str) -> Route:
        """The subject of ``group``, the header for group sends to it, and its frame key (the
        subject: a group's frames hold that group's messages only). Remembered."""
        route = self._group_routes.get(group)
        if route is None:
            subject = self.names.group(group)
            route = self._remember(self._group_routes, group, GROUP, subject, subject.name)
        return route

    def _remember(
        self, routes: dict[str, Route], target: str, kind: int, subject: Subject, key: str
    ) -> Route:
        if len(routes) >= _ROUTE_CACHE_SIZE:
            routes.clear()  # bounded by starting afresh
        route = routes[target] = (subject, envelope.header(kind, self.pid, target), key)
        return route

    def _reply_subject(self, reply_to: str, asker_pid: str) -> Subject:
        inbox = self._inboxes.get(asker_pid)
        if inbox is None:
            if len(self._inboxes) >= _ROUTE_CACHE_SIZE:
                self._inboxes.clear()
            inbox = self._inboxes[asker_pid] = self.names.reply_inbox(asker_pid)
        return self.names.reply_target(reply_to, asker_pid, inbox)

    # -- sending -------------------------------------------------------------------------------

    def check_size(self, body: bytes) -> bytes:
        """``body`` if its envelope fits the broker, else ``MessageTooLarge``."""
        if len(body) > self.max_body:
            raise MessageTooLarge(
                len(body) + self.settings.envelope_allowance,
                self.transport.max_payload,
                self.settings.broker_name,
            )
        return body

    def send(self, channel: str, owner: str, body: bytes) -> Awaitable[None] | None:
        """Deliver ``body`` to ``channel`` (owned by ``owner``; ``""``: a worker channel).

        Returns ``None`` when it is done — the common case, at no cost of a coroutine — else
        an awaitable that finishes it. ``ChannelFull`` for a full channel of this process,
        ``MessageTooLarge`` for a body the broker could not carry (even if it stays here).
        """
        if len(body) > self.max_body:
            self.check_size(body)
        if owner == self.pid:
            self.mailboxes.deliver(channel, body, raise_full=True)
            return None
        if not owner:
            return self._push_to_worker(channel, body)
        route = self._channel_routes.get(channel)
        subject, header, key = route if route is not None else self.channel_route(owner, channel)
        payload = envelope.with_body(header, body)
        if self.outbox.collect(subject, payload, key):
            return None
        return self.outbox.publish(subject, payload, key)

    def group_send(self, group: str, body: bytes, exclude: str | None) -> Awaitable[None] | None:
        """Deliver to this process's members of ``group`` now and publish once for the others;
        returns as :meth:`send` does."""
        if len(body) > self.max_body:
            self.check_size(body)
        members = self.groups.recipients(group)
        if members:
            self.mailboxes.deliver_many(members, body, exclude)
        route = self._group_routes.get(group)
        subject, header, key = route if route is not None else self.group_route(group)
        if exclude is None:
            payload = envelope.with_body(header, body)
        else:
            payload = envelope.encode(Envelope(GROUP, self.pid, group, body, None, None, exclude))
        if self.outbox.collect(subject, payload, key):
            return None
        return self.outbox.publish(subject, payload, key)

    async def _push_to_worker(self, channel: str, body: bytes, reply_to: str | None = None) -> None:
        message = Envelope(CHANNEL, self.pid, channel, body, reply_to, time.time())
        pushed = await self.transport.queue_push(
            self.names.queue(channel),
            envelope.encode(message),
            self.settings.capacity_for(channel),
            self.settings.expiry,
            reply_to,
        )
        if not pushed:
            raise ChannelFull(channel)
        self.published_directly += 1

    async def _publish_request(self, subject: Subject, request: Envelope) -> int | None:
        """Publish an envelope that carries ``reply_to``; the broker's receiver count if known."""
        await self.outbox.flush()  # what this process published before goes first
        receivers = await self.transport.publish_request(
            subject, envelope.encode(request), request.reply_to or ""
        )
        self.published_directly += 1
        return receivers

    async def _request(
        self, target: str, timeout: float, send: Callable[[str], Awaitable[None]]
    ) -> Any:
        await self.listen()  # the answer comes through the process's own subscription
        return await self.requests.request(target, timeout, send)

    # -- receiving -----------------------------------------------------------------------------

    def take(self, channel: str) -> bytes | None:
        """A message waiting for ``channel`` right now, if no receiver is ahead; else ``None``."""
        mailbox = self.mailboxes.get(channel)
        return None if mailbox is None else mailbox.get_nowait()

    def receive(self, channel: str, owner: str) -> Awaitable[bytes]:
        """What to await for the next message of ``channel``: one of this process (``owner`` is
        its pid), or a worker channel (``owner`` is ``""``).

        The mailbox's own ``get()`` once the process is listening — a receiver waits through
        no frame of the router's, which counts when thousands of consumers wait in turn."""
        if owner and owner != self.pid:
            raise ValueError(
                f"cannot receive on {channel!r}: it belongs to another process (or event "
                f"loop); receive only on channels this process made with new_channel()"
            )
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:  # ``is None``: an empty Mailbox is falsy (it has a length)
            mailbox = self.mailboxes.open(channel)
        if not owner:
            self.fetchers.ensure(channel, mailbox)
        elif not self._listening.succeeded:
            return self._listen_then_get(mailbox)
        return mailbox.get()

    async def _listen_then_get(self, mailbox: Mailbox) -> bytes:
        await self.listen()
        return await mailbox.get()

    async def new_channel(self, prefix: str, capacity: int | None) -> str:
        await self.listen()
        self.maybe_sweep()
        channel = f"{prefix}.{self.pid}!{secrets.token_hex(8)}"
        self.mailboxes.open(channel, capacity)
        return channel

    async def open_channel(self, channel: str, capacity: int | None) -> None:
        await self.listen()
        self.mailboxes.open(channel, capacity)

    def _pop(self, channel: str, timeout: float) -> Awaitable[bytes | None]:
        queue = self.names.queue(channel)
        return self.transport.queue_pop(queue, timeout, self.settings.capacity_for(channel))

    def _decode(self, payload: bytes) -> list[Envelope]:
        try:
            messages = envelope.decode_frame(payload)
        except ValueError as exc:
            self._drop("garbage", str(exc), 1)
            return []
        self.received += len(messages)
        return messages

    def _on_process_message(self, payload: bytes) -> None:
        mailboxes = self.mailboxes
        expires_at = mailboxes.expires_at()
        for message in self._decode(payload):
            kind = message.kind
            target = message.target
            if kind == CHANNEL:
                mailbox = mailboxes.get(target)
                if message.reply_to is None:
                    if mailbox is None:  # ``is None``: an empty Mailbox is falsy
                        mailbox = mailboxes.open(target)
                    if not mailbox.put(message.body, expires_at):
                        self._drop("channel_full", target, 1)
                elif mailbox is None:  # an ask for a channel that is gone
                    self._refuse(message, envelope.REPLY_NO_SUCH_CHANNEL, target)
                elif not mailbox.put(message.body, expires_at):
                    self._drop("channel_full", target, 1)
                    self._refuse(message, envelope.REPLY_ERROR, f"{target} is full")
            elif kind == REPLY:
                self.requests.resolve(message)
            elif kind == CONTROL:
                self._on_control(message)
        self.maybe_sweep()

    def _on_group_message(self, payload: bytes) -> None:
        for message in self._decode(payload):
            if message.origin_pid != self.pid:
                members = self.groups.recipients(message.target)
                if members:
                    self.mailboxes.deliver_many(members, message.body, message.exclude)
        self.maybe_sweep()

    # -- groups --------------------------------------------------------------------------------

    async def _subscribe_group(self, group: str) -> None:
        await self.transport.subscribe(self.group_route(group)[0], self._on_group_message)

    async def _unsubscribe_group(self, group: str) -> None:
        await self.transport.unsubscribe(self.group_route(group)[0])

    async def group_add(self, group: str, channel: str, owner: str) -> None:
        if owner == self.pid:
            await self.groups.add(group, channel)
            await self.roster.ensure_announced()  # listed before the membership can be asked for
        else:
            await self._change_remote_membership("group_add", group, channel, owner)

    async def group_discard(self, group: str, channel: str, owner: str) -> None:
        if owner == self.pid:
            self.groups.discard(group, channel)  # the subscription, if unused, goes later
        else:
            await self._change_remote_membership("group_discard", group, channel, owner)

    async def _change_remote_membership(
        self, op: str, group: str, channel: str, owner: str
    ) -> None:
        body = envelope.pack_body({"op": op, "group": group})
        subject = self.channel_route(owner, channel)[0]

        async def send(reply_to: str) -> None:
            request = Envelope(CONTROL, self.pid, channel, body, reply_to)
            if await self._publish_request(subject, request) == 0:
                raise NoResponders(channel)

        try:
            await self._request(channel, CONTROL_TIMEOUT, send)
        except NoResponders:
            pass  # the owner, or the channel, is gone: there is no membership to change

    def _on_control(self, request: Envelope) -> None:
        """A membership change for one of our channels, or a question to this process."""
        try:
            op, group = envelope.unpack_control(request.body)
            if op != PROCESS_STATS:
                check_group_name(group)
        except (ValueError, TypeError) as exc:  # TypeError: an invalid group name
            self._drop("garbage", str(exc), 1)
            self._refuse(request, envelope.REPLY_ERROR, str(exc))
            return
        if op in QUESTIONS:
            if request.reply_to is not None:
                body = envelope.pack_reply(envelope.REPLY_OK, self.answer(op, group))
                self.background.spawn(self._send_reply(request.reply_to, request.origin_pid, body))
            return
        channel = request.target
        if channel not in self.mailboxes:
            self._refuse(request, envelope.REPLY_NO_SUCH_CHANNEL, channel)
            return
        self.background.spawn(self._apply_then_confirm(op, group, channel, request))

    async def _apply_then_confirm(
        self, op: str, group: str, channel: str, request: Envelope
    ) -> None:
        if op == "group_add":
            await self.groups.add(group, channel)
            await self.roster.ensure_announced()
        else:
            self.groups.discard(group, channel)
        if request.reply_to is not None:
            body = envelope.pack_reply(envelope.REPLY_OK, True)
            await self._send_reply(request.reply_to, request.origin_pid, body)

    # -- asks ----------------------------------------------------------------------------------

    async def ask(
        self, channel: str, owner: str, message: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Ask ``channel`` (owned by ``owner``; ``""``: a worker channel) and return the answer."""

        async def send(reply_to: str) -> None:
            body = self.check_size(ask_body(message, reply_to, self.pid))
            if not owner:
                await self._push_to_worker(channel, body, reply_to)
            elif owner == self.pid:
                if channel not in self.mailboxes:
                    raise NoResponders(channel)
                self.mailboxes.deliver(channel, body, raise_full=True)
            else:
                request = Envelope(CHANNEL, self.pid, channel, body, reply_to)
                subject = self.channel_route(owner, channel)[0]
                if await self._publish_request(subject, request) == 0:
                    raise NoResponders(channel)

        answer: dict[str, Any] = await self._request(channel, timeout, send)
        return answer

    async def group_ask(
        self, group: str, message: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Ask every member of ``group``, here and elsewhere; the first answer wins."""

        async def send(reply_to: str) -> None:
            body = self.check_size(ask_body(message, reply_to, self.pid))
            local_members = self.mailboxes.deliver_many(self.groups.recipients(group), body)
            request = Envelope(GROUP, self.pid, group, body, reply_to)
            receivers = await self._publish_request(self.group_route(group)[0], request)
            if receivers == 0 and local_members == 0:
                raise NoResponders(group)

        answer: dict[str, Any] = await self._request(group, timeout, send)
        return answer

    async def reply(self, request: dict[str, Any], kind: str, value: Any) -> None:
        """Answer the ask ``request`` (as received) with a reply of ``kind``."""
        reply_to, asker_pid = ask_info(request)
        body = self.check_size(envelope.pack_reply(kind, value))
        await self._send_reply(reply_to, asker_pid, body)

    async def _send_reply(self, reply_to: str, asker_pid: str, body: bytes) -> None:
        answer = Envelope(REPLY, self.pid, reply_to, body)
        if asker_pid == self.pid:
            self.requests.resolve(answer)  # asked from this very process: no broker needed
        else:
            subject = self._reply_subject(reply_to, asker_pid)
            await self.outbox.publish(subject, envelope.encode(answer))

    def _refuse(self, request: Envelope, kind: str, value: Any) -> None:
        """Answer ``request`` in the background with a reply of ``kind`` (an error, or "n")."""
        if request.reply_to is not None:
            body = envelope.pack_reply(kind, value)
            self.background.spawn(self._send_reply(request.reply_to, request.origin_pid, body))

    # -- presence ------------------------------------------------------------------------------

    async def gather(self, question: str, group: str) -> list[Any]:
        """Every live process's answer to ``question`` about ``group`` (see :mod:`.roster`)."""
        return await self.roster.gather(question, group)

    def answer(self, question: str, group: str) -> list[str] | int | dict[str, Any]:
        """This process's answer: its members of ``group`` (or how many); or its snapshot."""
        if question == PROCESS_STATS:
            return self.snapshot().to_dict()
        members = self.groups.local_members(group)
        return members if question == MEMBERS else len(members)

    async def _ask_process(self, pid: str, question: str, group: str) -> Any:
        body = envelope.pack_body({"op": question, "group": group})
        subject = self.names.presence(pid)

        async def send(reply_to: str) -> None:
            request = Envelope(CONTROL, self.pid, "", body, reply_to)
            if await self._publish_request(subject, request) == 0:
                raise NoResponders(pid)

        return await self._request(pid, ANSWER_TIMEOUT, send)

    # -- housekeeping --------------------------------------------------------------------------

    def maybe_sweep(self) -> None:
        now = monotonic()
        if now - self._last_sweep >= self._sweep_interval:
            self._last_sweep = now
            for channel in self.mailboxes.sweep(now):
                self.groups.forget_channel(channel)

    async def flush(self) -> None:
        """Forget this process's messages and groups; delete stored worker queues."""
        self.mailboxes.clear_messages()
        await self.groups.clear()
        await self.transport.queue_flush(self.names.queues())

    def snapshot(self) -> ProcessStats:
        """This process's :class:`~channels_neffos.stats.ProcessStats` (copies: a metrics
        scrape may read it from another thread while the loop changes what it copies)."""
        now = monotonic()
        sizes = self.groups.sizes()
        mailboxes = self.mailboxes.all()
        largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:LARGEST_GROUPS]
        down_since = self.status.down_since
        return ProcessStats(
            pid=self.pid,
            host=socket.gethostname(),
            os_pid=os.getpid(),
            started_at=self.started_at,
            uptime=round(now - self.started_monotonic, 3),
            connected=down_since is None,
            down_for=None if down_since is None else round(now - down_since, 3),
            channels=len(mailboxes),
            queued=sum(len(mailbox) for mailbox in mailboxes),
            groups=len(sizes),
            members=sum(sizes.values()),
            largest_groups=dict(largest),
            pending_replies=len(self.requests.pending),
            published=self.outbox.published + self.published_directly,
            received=self.received + self.fetchers.received,
            counters=dict(self._hooks.counters),
            **self._hooks.report(),
        )

    async def ping(self, timeout: float) -> float:
        """Seconds for a message to one of this process's channels *through the broker* (a
        plain send would take the local shortcut); ``BrokerUnavailable`` if it does not arrive
        within ``timeout``."""
        channel = await self.new_channel("ping", None)
        mailbox = self.mailboxes.open(channel)
        ping = Envelope(CHANNEL, self.pid, channel, envelope.pack_body({"type": "neffos.ping"}))
        started = monotonic()
        try:
            await self.outbox.publish(
                self.channel_route(self.pid, channel)[0], envelope.encode(ping)
            )
            await asyncio.wait_for(mailbox.get(), timeout)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            raise BrokerUnavailable(
                self.url, f"a message through the broker did not come back in {timeout} s"
            ) from exc
        finally:
            self.mailboxes.close(channel)
        return monotonic() - started
