"""An in-memory broker: the channels_neffos layers with no Redis or NATS, inside one OS process.

For tests of code built on the layers (and of the layers' own routing) that need no real broker::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_neffos.testing.memory.MemoryChannelLayer",
        "CONFIG": {"broker": "tests"},
    }}

Every :class:`MemoryChannelLayer` naming the same ``broker`` in one OS process shares one
:class:`MemoryBroker` (:func:`memory_broker`), so two layer objects behave as two instances of an
application on one broker, with all of the layers' semantics: local first, frames, groups,
worker channels (exactly one reader each), asks with "no responders", presence.

What the broker does, as Redis would:

* **Pub/sub.** A publish reaches every subscription whose subject it matches (exact, or a
  wildcard: every subject that starts with the wildcard's parts), each on its own event loop,
  never within the ``publish`` call itself; per publisher and subscriber, in publish order.
  :meth:`MemoryTransport.publish_request` returns how many subscriptions it reached.
* **Queues** hold at most ``capacity`` items (a push beyond returns ``False``); each item goes to
  exactly one ``queue_pop``.
* **A registry of processes** whose entries expire ``ttl`` seconds after their last announcement.
* **History** of groups, as Redis keeps it (:mod:`channels_neffos.transports.redis_history`):
  an epoch, contiguous offsets, at most ``size`` messages each kept ``ttl`` seconds; an append
  publishes its positioned batch in the same step.
* **Outages on demand** (:meth:`MemoryBroker.stop`, :meth:`MemoryBroker.start`): while stopped,
  every call raises ``BrokerUnavailable`` and transports report the connection lost; a start
  reports it restored. Like a broker restarted without persistence, a stop forgets queues, the
  registry and every history (the next append starts a new epoch); subscriptions come back
  (transports re-issue them, as real ones do).

It is thread-safe: layers used from ``async_to_sync`` (a new event loop per call, in other
threads) share it. It does not cross OS processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from ..channel_layer import NeffosChannelLayer
from ..exceptions import BrokerUnavailable
from ..transports.base import (
    HistoryLimits,
    HistorySlice,
    OnMessage,
    ProcessRegistry,
    Subject,
    Transport,
    TransportEvents,
    pack_positioned,
)

#: The largest payload the in-memory broker takes by default (NATS' default, 1 MiB).
DEFAULT_MAX_PAYLOAD = 1024 * 1024

__all__ = ["MemoryBroker", "MemoryChannelLayer", "MemoryTransport", "memory_broker"]


@dataclass(eq=False)
class _Subscription:
    loop: asyncio.AbstractEventLoop
    on_message: OnMessage


@dataclass
class _Queue:
    items: deque[bytes] = field(default_factory=deque)
    #: Pops waiting for an item: (their loop, their future).
    waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes]]] = field(
        default_factory=deque
    )


@dataclass
class _History:
    epoch: str
    offset: int = 0
    #: (offset, appended at, payload), oldest first.
    entries: deque[tuple[int, float, bytes]] = field(default_factory=deque)
    last_write: float = 0.0


class MemoryBroker:
    """Subjects, queues and a registry of processes, shared by the transports of one name."""

    def __init__(self, name: str = "default", max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.name = name
        self.max_payload = max_payload
        self.running = True
        #: Broker messages published (each frame once), for tests that count them.
        self.published = 0
        self._lock = threading.Lock()
        self._exact: dict[str, list[_Subscription]] = {}
        self._patterns: dict[str, list[_Subscription]] = {}  # prefix -> subscriptions
        self._queues: dict[str, _Queue] = {}
        self._registry: dict[str, dict[str, float]] = {}  # key -> {pid: expires at}
        self._histories: dict[str, _History] = {}
        self._transports: set[MemoryTransport] = set()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r}>"

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    # -- outages -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Go down: calls raise ``BrokerUnavailable``; queues and the registry are forgotten."""
        with self._lock:
            self.running = False
            self._queues.clear()
            self._registry.clear()
            self._histories.clear()
            transports = list(self._transports)
        for transport in transports:
            transport._lost()

    def start(self) -> None:
        """Come back: transports re-issue their subscriptions and report the connection back."""
        with self._lock:
            self.running = True
            transports = list(self._transports)
        for transport in transports:
            transport._restored()

    def _check(self) -> None:
        if not self.running:
            raise BrokerUnavailable(self.url, "the in-memory broker is stopped")

    # -- pub/sub -------------------------------------------------------------------------------

    def subscribe(self, subject: Subject, subscription: _Subscription) -> None:
        with self._lock:
            self._check()
            table, key = self._table(subject)
            table.setdefault(key, []).append(subscription)

    def unsubscribe(self, subject: Subject, subscription: _Subscription) -> None:
        with self._lock:
            table, key = self._table(subject)
            subscriptions = table.get(key, [])
            if subscription in subscriptions:
                subscriptions.remove(subscription)
            if not subscriptions:
                table.pop(key, None)

    def _table(self, subject: Subject) -> tuple[dict[str, list[_Subscription]], str]:
        if subject.pattern:
            return self._patterns, subject.name.rstrip("*")
        return self._exact, subject.name

    def publish(self, subject: Subject, payload: bytes) -> int:
        """Deliver ``payload`` to every matching subscription; how many it reached."""
        with self._lock:
            self._check()
            if len(payload) > self.max_payload:
                raise BrokerUnavailable(
                    self.url, f"a payload of {len(payload)} bytes is over max_payload"
                )
            self.published += 1
            name = subject.name
            reached = list(self._exact.get(name, ()))
            for prefix, subscriptions in self._patterns.items():
                if name.startswith(prefix):
                    reached += subscriptions
        for subscription in reached:
            _deliver(subscription.loop, subscription.on_message, payload)
        return len(reached)

    # -- queues --------------------------------------------------------------------------------

    def queue_push(self, name: str, payload: bytes, capacity: int) -> bool:
        with self._lock:
            self._check()
            queue = self._queues.setdefault(name, _Queue())
            while queue.waiters:  # straight to a waiting pop, if one still waits
                loop, waiter = queue.waiters.popleft()
                if not waiter.done():
                    loop.call_soon_threadsafe(_resolve, waiter, payload, self, name)
                    return True
            if len(queue.items) >= capacity:
                return False
            queue.items.append(payload)
            return True

    async def queue_pop(self, name: str, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        with self._lock:
            self._check()
            queue = self._queues.setdefault(name, _Queue())
            if queue.items:
                return queue.items.popleft()
            queue.waiters.append((loop, waiter))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None

    def _requeue(self, name: str, payload: bytes) -> None:
        """A pop that was handed ``payload`` had given up meanwhile: the next one gets it."""
        with self._lock:
            if self.running:
                self._queues.setdefault(name, _Queue()).items.appendleft(payload)

    def queue_flush(self, prefix: str) -> None:
        with self._lock:
            self._check()
            for name in [name for name in self._queues if name.startswith(prefix)]:
                self._queues[name].items.clear()

    # -- history -------------------------------------------------------------------------------

    def _history(self, name: str, limits: HistoryLimits, now: float) -> _History | None:
        history = self._histories.get(name)
        if history is not None:
            if now - history.last_write > limits.meta_ttl:
                del self._histories[name]
                return None
            while history.entries and history.entries[0][1] < now - limits.ttl:
                history.entries.popleft()
        return history

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> tuple[str, int]:
        with self._lock:
            self._check()
            now = monotonic()
            history = self._history(subject.name, limits, now)
            if history is None:
                history = self._histories[subject.name] = _History(epoch)
            first = history.offset + 1
            for payload in payloads:
                history.offset += 1
                history.entries.append((history.offset, now, payload))
            while len(history.entries) > limits.size:
                history.entries.popleft()
            history.last_write = now
            batch = pack_positioned(history.epoch, first, payloads)
            reached = list(self._exact.get(subject.name, ()))
            for subscription in reached:  # under the lock: batches reach everyone in order
                _deliver(subscription.loop, subscription.on_message, batch)
            return history.epoch, first

    def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        with self._lock:
            self._check()
            history = self._history(subject.name, limits, monotonic())
            if history is None:
                return HistorySlice(None, 0, [])
            entries = [(offset, payload) for offset, _, payload in history.entries]
        if since is not None:
            entries = [entry for entry in entries if entry[0] > since][:limit]
        elif limit:
            entries = entries[-limit:]
        return HistorySlice(history.epoch, history.offset, entries)

    # -- registry ------------------------------------------------------------------------------

    def announce(self, key: str, pid: str, ttl: float) -> None:
        with self._lock:
            self._check()
            self._registry.setdefault(key, {})[pid] = monotonic() + ttl

    def retract(self, key: str, pid: str) -> None:
        with self._lock:
            if self.running:
                self._registry.get(key, {}).pop(pid, None)

    def announced(self, key: str) -> list[str]:
        with self._lock:
            self._check()
            now = monotonic()
            entries = self._registry.get(key, {})
            for pid in [pid for pid, until in entries.items() if until <= now]:
                del entries[pid]
            return list(entries)

    def _attach(self, transport: MemoryTransport) -> None:
        with self._lock:
            self._check()
            self._transports.add(transport)

    def _detach(self, transport: MemoryTransport) -> None:
        with self._lock:
            self._transports.discard(transport)


def _deliver(loop: asyncio.AbstractEventLoop, on_message: OnMessage, payload: bytes) -> None:
    try:
        if loop is _running_loop():
            loop.call_soon(on_message, payload)
        else:
            loop.call_soon_threadsafe(on_message, payload)
    except RuntimeError:
        pass  # that loop is closed: its subscriber is gone, as a dead process's would be


def _resolve(
    waiter: asyncio.Future[bytes], payload: bytes, broker: MemoryBroker, name: str
) -> None:
    if waiter.done():
        broker._requeue(name, payload)
    else:
        waiter.set_result(payload)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_brokers: dict[str, MemoryBroker] = {}
_brokers_lock = threading.Lock()


def memory_broker(name: str = "default") -> MemoryBroker:
    """The broker of ``name`` in this OS process (made on first use)."""
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = MemoryBroker(name)
        return broker


class MemoryTransport(Transport):
    """A transport to a :class:`MemoryBroker`, bound to the event loop that connects it."""

    def __init__(self, broker: MemoryBroker, events: TransportEvents, prefix: str = "") -> None:
        self._broker = broker
        self._events = events
        self._prefix = prefix
        self.url = broker.url
        self.max_payload = broker.max_payload
        self._subscriptions: dict[Subject, _Subscription] = {}
        self._connected = False

    def subject(self, *parts: str) -> str:
        return ":".join(parts)

    def wildcard(self, *parts: str) -> str:
        return ":".join((*parts, "*"))

    async def connect(self) -> None:
        self._broker._attach(self)
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        self._broker._detach(self)
        for subject, subscription in self._subscriptions.items():
            self._broker.unsubscribe(subject, subscription)
        self._subscriptions.clear()

    def _lost(self) -> None:
        self._call_on_loop(lambda: self._events.connection_lost(None))

    def _restored(self) -> None:
        def restored() -> None:
            for subject, subscription in self._subscriptions.items():
                self._broker.subscribe(subject, subscription)
            self._events.connection_restored()

        self._call_on_loop(restored)

    def _call_on_loop(self, call: Callable[[], None]) -> None:
        for subscription in self._subscriptions.values():
            _deliver(subscription.loop, lambda _payload: call(), b"")
            return
        call()  # subscribed to nothing: no loop of its own is known

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        subscription = _Subscription(asyncio.get_running_loop(), on_message)
        self._broker.subscribe(subject, subscription)
        old = self._subscriptions.pop(subject, None)
        if old is not None:
            self._broker.unsubscribe(subject, old)
        self._subscriptions[subject] = subscription

    async def unsubscribe(self, subject: Subject) -> None:
        subscription = self._subscriptions.pop(subject, None)
        if subscription is not None:
            self._broker.unsubscribe(subject, subscription)

    async def publish(self, subject: Subject, payload: bytes) -> None:
        reached = self._broker.publish(subject, payload)
        if reached == 0 and subject.process:
            self._events.dropped("no_subscriber", f"{subject.name} ({self.url})")

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        return self._broker.publish(subject, payload)

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        return self._broker.queue_push(queue.name, payload, capacity)

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        return await self._broker.queue_pop(queue.name, timeout)

    async def queue_flush(self, queues: Subject) -> None:
        self._broker.queue_flush(queues.name.rstrip("*"))

    def registry(self) -> ProcessRegistry:
        return _MemoryRegistry(self._broker, f"{self._prefix}:processes")

    keeps_history = True

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        self._broker.history_append(subject, payloads, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        return self._broker.history_read(subject, since, limit, limits)


class _MemoryRegistry(ProcessRegistry):
    def __init__(self, broker: MemoryBroker, key: str) -> None:
        self._broker = broker
        self._key = key

    async def announce(self, pid: str, ttl: float) -> None:
        self._broker.announce(self._key, pid, ttl)

    async def retract(self, pid: str) -> None:
        self._broker.retract(self._key, pid)

    async def announced(self) -> list[str]:
        return self._broker.announced(self._key)


class MemoryChannelLayer(NeffosChannelLayer):
    """A channels_neffos layer on the in-memory broker ``broker`` (see the module docstring).

    Takes every option of the other layers (``prefix``, ``capacity``, ``expiry``...).
    """

    broker_name = "the in-memory broker"

    def __init__(self, broker: str = "default", **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(broker, str) or not broker:
            raise TypeError(f"broker must be the name of an in-memory broker, got {broker!r}")
        self.broker = broker

    def make_transport(self, events: TransportEvents) -> Transport:
        return MemoryTransport(memory_broker(self.broker), events, self.prefix)
