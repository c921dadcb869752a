"""One layer's presence on one event loop: a "process" with its own ``pid`` and broker connection.

Everything that owns sockets, tasks or futures lives here, so that closing an event loop closes
exactly what that loop opened. The public, validated API is :mod:`channels_neffos.engine`.

Routing (``P`` = prefix, ``pid`` = this process):

* A process channel ``<prefix>.<pid>!<id>`` belongs to the process whose ``pid`` it names. Sent
  from its owner, it goes straight into the local mailbox and never touches the broker; sent from
  elsewhere, it is published once to ``P/<pid>/c/<channel>``, which the owner receives through
  its single wildcard subscription ``P/<pid>/*``.
* A group is local membership plus one subscription ``P/g/<group>`` while it has local members.
  ``group_send`` delivers to local members directly and publishes once; every process delivers
  what it receives to its own members and drops the echo of its own publishes.
* A worker channel (no ``!``) is a broker queue ``P/q/<name>``; a receive pulls one message at a
  time into a local mailbox, so each message reaches exactly one reader in the whole system.
* ``group_add``/``group_discard`` for a channel owned by another process are forwarded to the
  owner as a request and return once the owner confirmed, so a ``group_send`` issued right after
  reaches the channel.
* Every publish goes through the process's :class:`~channels_neffos.outbox.Outbox`, which sends
  a burst to one subject as one frame; asks and their replies are :mod:`channels_neffos.replies`.

Delivery is at-most-once. Order is FIFO per sender and channel; a message sent to a channel and a
``group_send`` reaching the same channel travel on different subjects, so their relative order
holds locally and on a single Redis server (one pub/sub connection) but not necessarily on NATS
or across sharded Redis servers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any

from channels.exceptions import ChannelFull

from . import envelope
from .connection_state import ConnectionState
from .envelope import CHANNEL, CONTROL, GROUP, REPLY, Envelope
from .exceptions import (
    BrokerUnavailable,
    LayerClosed,
    MessageTooLarge,
    NoResponders,
    PermissionDenied,
)
from .mailbox import Mailbox
from .outbox import Outbox
from .presence import MEMBERS as PRESENCE_MEMBERS
from .presence import PROCESS_STATS, Presence
from .presence import SIZE as PRESENCE_SIZE
from .replies import Replies
from .stats import process_stats

if TYPE_CHECKING:
    from .engine import NeffosChannelLayer

logger = logging.getLogger("channels_neffos")

#: How long a worker-channel fetcher blocks on the broker per attempt; bounds how long a
#: fetcher outlives its last receiver.
_QUEUE_POP_TIMEOUT = 1.0
#: How long group_add/group_discard wait for the owner of a remote channel to confirm.
CONTROL_TIMEOUT = 5.0


_PID_RE = re.compile(r"[0-9a-f]{12}")
#: How many channel and group routes a process remembers (see channel_route).
_ROUTE_CACHE_SIZE = 10_000
#: Where a publish goes: (subject, envelope header, frame key) — see Outbox.collect.
Route = tuple[str, bytes, str]


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("channels_neffos background task failed", exc_info=task.exception())


def owner_pid(channel: str) -> str | None:
    """The ``pid`` a process channel name carries, or ``None`` if it carries none we made."""
    bang = channel.find("!")
    pid = channel[bang - 12 : bang]
    if bang > 12 and channel[bang - 13] == "." and _PID_RE.fullmatch(pid):
        return pid
    return None


class LayerProcess:
    """Per-event-loop state of one layer. Implements the transport's ``TransportEvents``."""

    def __init__(self, layer: NeffosChannelLayer, pid: str | None = None) -> None:
        self.layer = layer
        self.pid = pid or secrets.token_hex(6)
        self.prefix = layer.prefix
        self.transport = layer.transport_for(self)
        self.connection = ConnectionState(layer, self.pid, self.transport.url, layer.counters)
        self.outbox = Outbox(self.transport, self._publish_lost)
        self.mailboxes: dict[str, Mailbox] = {}
        #: group -> {local channel -> membership deadline (monotonic)}
        self.groups: dict[str, dict[str, float]] = {}
        #: group -> subscription in progress or done; awaited by every concurrent group_add
        self._group_subscriptions: dict[str, asyncio.Future[None]] = {}
        self.replies = Replies(self)
        self.presence = Presence(
            self.transport.registry,
            self.pid,
            self.transport.url,
            lambda pid: self.transport.subject(self.prefix, pid, "p"),
            self.replies,
            self.presence_answer,
            self._count,
            enabled=layer.presence,
        )
        self._fetchers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Future[None] | None = None
        #: The wildcard subscription is in place (checked on every receive: a plain bool).
        self.listening = False
        self._routes: dict[str, Route] = {}
        self._group_routes: dict[str, Route] = {}
        self._last_sweep = monotonic()
        self.drop = layer.drop_log
        self.started = False
        self.started_at, self.started_monotonic = time.time(), monotonic()
        self.loop = asyncio.get_running_loop()
        #: Messages that arrived from the broker, and those published without the outbox (worker
        #: channel pushes, requests): for stats.
        self.received = 0
        self.published_directly = 0
        self.closed = False
        self.max_body = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.connect()
        # Largest user body such that the envelope around it still fits the broker.
        self.max_body = self.transport.max_payload - self.layer.ENVELOPE_ALLOWANCE
        self.started = True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        tasks = [*self._fetchers.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.replies.fail_all()
        for channel, mailbox in self.mailboxes.items():
            mailbox.fail_waiters(LayerClosed(channel))
        await self.presence.close()  # retracted: this process's members are gone at once
        await self.outbox.close()
        await self.transport.close()

    async def listen(self) -> None:
        """Subscribe this process's wildcard once; every concurrent caller waits for it."""
        if self.listening:
            return
        if self._listening is None:
            self._listening = asyncio.ensure_future(
                self.transport.subscribe(
                    self.transport.wildcard(self.prefix, self.pid), self._on_process_message
                )
            )
        try:
            await asyncio.shield(self._listening)
        except BaseException:
            if self._listening.done() and self._listening.exception() is not None:
                self._listening = None  # let the next caller try again
            raise
        self.listening = True

    # -- TransportEvents -----------------------------------------------------------------------

    def connection_lost(self, reason: BaseException | None) -> None:
        self.connection.lost(reason)

    def connection_restored(self) -> None:
        self.connection.restored()
        if not self.closed:
            self.spawn(self.presence.announce_again())  # a restarted broker lost the registry

    def _count(self, event: str) -> None:
        self.layer.counters[event] += 1

    def dropped(self, reason: str, where: str) -> None:
        self.drop(reason, where)

    def no_responders(self, reply_subject: str) -> None:
        self.replies.fail(reply_subject, NoResponders(reply_subject))

    def request_refused(self, reply_subject: str, reason: str) -> None:
        self.replies.fail(reply_subject, PermissionDenied(self.transport.url, reason))

    # -- subjects ------------------------------------------------------------------------------

    def channel_route(self, pid: str, channel: str) -> Route:
        """The subject of ``channel`` (owned by ``pid``), the envelope header for plain sends
        to it from this process, and its frame key: ``pid``, so that sends to several channels
        of one process share frames. Remembered: building (and escaping) a subject and encoding
        a header cost more than the rest of a send."""
        route = self._routes.get(channel)
        if route is None:
            subject = self.transport.subject(self.prefix, pid, "c", channel)
            route = self._remember(self._routes, CHANNEL, channel, subject, pid)
        return route

    def channel_subject(self, pid: str, channel: str) -> str:
        return self.channel_route(pid, channel)[0]

    def group_route(self, group: str) -> Route:
        """The subject of ``group``, the header for group sends to it, and its frame key (the
        subject: a group's frames hold that group's messages only). Remembered."""
        route = self._group_routes.get(group)
        if route is None:
            subject = self.transport.subject(self.prefix, "g", group)
            route = self._remember(self._group_routes, GROUP, group, subject, subject)
        return route

    def _remember(
        self, routes: dict[str, Route], kind: int, target: str, subject: str, frame_key: str
    ) -> Route:
        if len(routes) >= _ROUTE_CACHE_SIZE:
            routes.clear()  # bounded by starting afresh
        route = routes[target] = (subject, envelope.header(kind, self.pid, target), frame_key)
        return route

    def group_subject(self, group: str) -> str:
        return self.group_route(group)[0]

    def queue_name(self, channel: str) -> str:
        return self.transport.subject(self.prefix, "q", channel)

    # -- local delivery ------------------------------------------------------------------------

    def mailbox(self, channel: str, capacity: int | None = None) -> Mailbox:
        """``channel``'s mailbox, made on first use with ``capacity`` (default: the layer's
        ``capacity``/``channel_capacity`` for that name)."""
        mailbox = self.mailboxes.get(channel)
        if mailbox is None:
            if capacity is None:
                capacity = self.layer.get_capacity(channel)
            mailbox = self.mailboxes[channel] = Mailbox(channel, capacity, self._expired)
        return mailbox

    def _expired(self, channel: str, count: int) -> None:
        self.drop("expired", channel, count)

    def deliver(self, channel: str, body: bytes, *, raise_full: bool) -> bool:
        """Put ``body`` in ``channel``'s mailbox; ``False`` (counted) or ``ChannelFull`` if full."""
        if self.mailbox(channel).put(body, monotonic() + self.layer.expiry):
            return True
        if raise_full:
            raise ChannelFull(channel)
        self.drop("channel_full", channel)
        return False

    def deliver_to_group(self, group: str, body: bytes, exclude: str | None = None) -> int:
        """Deliver to this process's members of ``group`` (but ``exclude``); how many got it."""
        members = self.groups.get(group)
        if not members:
            return 0
        now = monotonic()
        expires_at = now + self.layer.expiry
        mailboxes = self.mailboxes
        delivered = 0
        for channel, deadline in list(members.items()):
            if deadline < now:
                self._forget_member(group, channel)
            elif channel != exclude:
                mailbox = mailboxes.get(channel) or self.mailbox(channel)
                if not mailbox.put(body, expires_at):
                    self.drop("channel_full", channel)
                delivered += 1
        return delivered

    # -- publishing ----------------------------------------------------------------------------

    def check_size(self, body: bytes) -> None:
        if len(body) > self.max_body:
            raise MessageTooLarge(
                len(body) + self.layer.ENVELOPE_ALLOWANCE,
                self.transport.max_payload,
                self.layer.broker_name,
            )

    async def publish(self, subject: str, message: Envelope) -> None:
        await self.outbox.publish(subject, envelope.encode(message))

    def _publish_lost(self, subject: str, count: int) -> None:
        self.drop("broker_down", f"{subject} ({self.transport.url})", count)

    async def send_to_worker_channel(
        self, channel: str, body: bytes, reply_to: str | None = None
    ) -> None:
        message = Envelope(CHANNEL, self.pid, channel, body, reply_to, time.time())
        capacity = self.layer.get_capacity(channel)
        try:
            pushed = await self.transport.queue_push(
                self.queue_name(channel),
                envelope.encode(message),
                capacity,
                self.layer.expiry,
                reply_to,
            )
        except BrokerUnavailable:
            raise  # already says why (PermissionDenied: the user may not push there)
        except ConnectionError as exc:
            raise BrokerUnavailable(self.transport.url, exc) from exc
        if not pushed:
            raise ChannelFull(channel)
        self.published_directly += 1

    # -- receiving from the broker -------------------------------------------------------------

    def _decode(self, payload: bytes) -> list[Envelope]:
        try:
            messages = envelope.decode_frame(payload)
        except ValueError as exc:
            self.drop("garbage", str(exc))
            return []
        self.received += len(messages)
        return messages

    def _on_process_message(self, payload: bytes) -> None:
        expires_at = monotonic() + self.layer.expiry
        mailboxes = self.mailboxes
        for message in self._decode(payload):
            kind = message.kind
            target = message.target
            if kind == CHANNEL:
                if message.reply_to is None:
                    mailbox = mailboxes.get(target) or self.mailbox(target)
                    if not mailbox.put(message.body, expires_at):
                        self.drop("channel_full", target)
                elif target not in mailboxes:  # an ask for a channel that is gone
                    self.replies.refuse(message, envelope.REPLY_NO_SUCH_CHANNEL, target)
                elif not self.deliver(target, message.body, raise_full=False):
                    self.replies.refuse(message, envelope.REPLY_ERROR, f"{target} is full")
            elif kind == REPLY:
                self.replies.resolve(message)
            elif kind == CONTROL:
                self._apply_control(message)
        self.maybe_sweep()

    def _on_group_message(self, payload: bytes) -> None:
        for message in self._decode(payload):
            if message.origin_pid != self.pid:
                self.deliver_to_group(message.target, message.body, message.exclude)
        self.maybe_sweep()

    # -- remote group membership ---------------------------------------------------------------

    def _apply_control(self, request: Envelope) -> None:
        try:
            op, group = envelope.unpack_control(request.body)
            if op != PROCESS_STATS:
                self.layer.require_valid_group_name(group)
        except (ValueError, TypeError) as exc:  # TypeError: an invalid group name
            self.drop("garbage", str(exc))
            self.replies.refuse(request, envelope.REPLY_ERROR, str(exc))
            return
        if op in (PRESENCE_MEMBERS, PRESENCE_SIZE, PROCESS_STATS):  # a question to the process
            answer = envelope.pack_reply(envelope.REPLY_OK, self.presence_answer(op, group))
            if request.reply_to is not None:
                self.spawn(self.replies.send_reply(request.reply_to, request.origin_pid, answer))
            return
        channel = request.target
        if channel not in self.mailboxes:
            self.replies.refuse(request, envelope.REPLY_NO_SUCH_CHANNEL, channel)
            return
        if op == "group_add":
            done: Awaitable[None] = self.group_add_local(group, channel)
        else:
            done = self.group_discard_local(group, channel)

        async def apply_then_reply() -> None:
            await done
            if request.reply_to is not None:
                body = envelope.pack_reply(envelope.REPLY_OK, True)
                await self.replies.send_reply(request.reply_to, request.origin_pid, body)

        self.spawn(apply_then_reply())

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; close() cancels and awaits it."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        _log_failure(task)

    async def change_remote_membership(self, op: str, group: str, channel: str, pid: str) -> None:
        body = envelope.pack_body({"op": op, "group": group})

        async def send(reply_to: str) -> None:
            request = Envelope(CONTROL, self.pid, channel, body, reply_to)
            if await self.replies.publish_request(self.channel_subject(pid, channel), request) == 0:
                raise NoResponders(channel)

        try:
            await self.replies.request(channel, CONTROL_TIMEOUT, send)
        except NoResponders:
            pass  # the owner, or the channel, is gone: there is no membership to change

    # -- groups --------------------------------------------------------------------------------

    async def group_add_local(self, group: str, channel: str) -> None:
        self.groups.setdefault(group, {})[channel] = monotonic() + self.layer.group_expiry
        subscribed = self._group_subscriptions.get(group)
        if subscribed is None:
            subscribed = asyncio.ensure_future(
                self.transport.subscribe(self.group_subject(group), self._on_group_message)
            )
            self._group_subscriptions[group] = subscribed
        try:
            await asyncio.shield(subscribed)
        except BaseException:
            if subscribed.done() and subscribed.exception() is not None:
                self._group_subscriptions.pop(group, None)
            raise
        await self.presence.ensure_announced()  # listed before the membership can be asked for

    def presence_answer(self, operation: str, group: str) -> list[str] | int | dict[str, Any]:
        """This process's members of ``group`` (or how many), memberships past expiry left out;
        or, for ``process_stats``, its :class:`~channels_neffos.stats.ProcessStats` as a dict."""
        if operation == PROCESS_STATS:
            return process_stats(self).to_dict()
        now = monotonic()
        members = [c for c, until in self.groups.get(group, {}).items() if until > now]
        return members if operation == PRESENCE_MEMBERS else len(members)

    async def group_discard_local(self, group: str, channel: str) -> None:
        # Delivery stops at once; the broker subscription, if now unused, goes in the background.
        self._forget_member(group, channel)

    def _forget_member(self, group: str, channel: str) -> bool:
        """Remove ``channel`` from ``group``; True if the group has no local members left."""
        members = self.groups.get(group)
        if members is None:
            return False
        members.pop(channel, None)
        if members:
            return False
        del self.groups[group]
        if group in self._group_subscriptions:
            # Unsubscribe later, outside whatever synchronous path noticed the emptiness.
            self.spawn(self._unsubscribe_if_empty(group))
        return True

    async def _unsubscribe_if_empty(self, group: str) -> None:
        subscribed = self._group_subscriptions.get(group)
        if subscribed is None or group in self.groups:
            return
        await asyncio.gather(subscribed, return_exceptions=True)
        if group not in self.groups and self._group_subscriptions.get(group) is subscribed:
            del self._group_subscriptions[group]
            await self.transport.unsubscribe(self.group_subject(group))

    # -- worker channels -----------------------------------------------------------------------

    def ensure_fetcher(self, channel: str, mailbox: Mailbox) -> None:
        running = self._fetchers.get(channel)
        if running is None or running.done():
            task = asyncio.ensure_future(self._fetch_worker_messages(channel, mailbox))
            self._fetchers[channel] = task
            task.add_done_callback(lambda t: self._fetcher_done(channel, t))

    def _fetcher_done(self, channel: str, task: asyncio.Task[None]) -> None:
        if self._fetchers.get(channel) is task:
            del self._fetchers[channel]
        _log_failure(task)

    async def _fetch_worker_messages(self, channel: str, mailbox: Mailbox) -> None:
        """Pull one message at a time while receivers wait, so others can take the rest."""
        await asyncio.sleep(0)  # let the receiver that started us register as a waiter
        name = self.queue_name(channel)
        capacity = self.layer.get_capacity(channel)
        while mailbox.has_waiters and not self.closed:
            try:
                payload = await self.transport.queue_pop(name, _QUEUE_POP_TIMEOUT, capacity)
            except PermissionDenied as exc:
                mailbox.fail_waiters(exc)  # retrying cannot help: the receivers must know
                return
            except ConnectionError as exc:
                logger.warning("cannot receive from worker channel %s: %s", channel, exc)
                await asyncio.sleep(_QUEUE_POP_TIMEOUT)
                continue
            if payload is None:
                continue
            try:
                message = envelope.decode(payload)
            except ValueError as exc:
                self.drop("garbage", str(exc))
                continue
            self.received += 1
            age = time.time() - (message.sent_at or time.time())
            remaining = self.layer.expiry - age
            if remaining < 0:
                self.drop("expired", channel)
                continue
            # Already taken off the broker queue: it must not be refused for capacity.
            mailbox.put(message.body, monotonic() + remaining, force=True)

    # -- housekeeping --------------------------------------------------------------------------

    def maybe_sweep(self) -> None:
        now = monotonic()
        if now - self._last_sweep >= self.layer.sweep_interval:
            self._last_sweep = now
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget channels nobody has received from for ``expiry`` and whose messages expired.

        Channels gives a layer no "channel closed" call; a consumer that went away without
        ``group_discard`` leaves its channel behind. Once nobody has waited on it for a whole
        ``expiry`` and nothing unexpired waits in it, it is dead: drop it and its memberships.
        """
        idle_before = now - self.layer.expiry
        for channel, mailbox in list(self.mailboxes.items()):
            if mailbox.has_waiters or mailbox.last_active > idle_before:
                continue
            if mailbox.drop_expired() == 0:
                del self.mailboxes[channel]
                for group in [g for g, members in self.groups.items() if channel in members]:
                    self._forget_member(group, channel)

    async def flush(self) -> None:
        for channel, mailbox in list(self.mailboxes.items()):
            mailbox.clear()
            if not mailbox.has_waiters:  # a waiting receiver keeps its (now empty) mailbox
                del self.mailboxes[channel]
        groups = list(self._group_subscriptions)
        self.groups.clear()
        self._group_subscriptions.clear()
        for group in groups:
            await self.transport.unsubscribe(self.group_subject(group))
        await self.transport.queue_flush()
