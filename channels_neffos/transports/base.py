"""The small interface a broker must offer: the strict cut-off between the core and the network.

A transport moves opaque ``bytes`` between *subjects* and nothing more. It never knows about
channels, groups, mailboxes, capacity, expiry, asks or frames — those live in the core, once,
for every broker (publishes are coalesced into frames by the core's outbox before they get
here). What a transport does own is what really differs between brokers:

* how a subject is spelled (:meth:`Transport.subject`, :meth:`Transport.wildcard`) — ``:``-joined
  keys on Redis, ``.``-separated tokens on NATS — including escaping what the broker cannot carry;
* how a subscription is confirmed, so that after ``await subscribe(...)`` a publish from any
  other connection reaches it;
* worker queues (exactly one reader per message): a Redis list, a NATS queue group;
* reconnecting, and re-establishing its own subscriptions after a reconnect. It reports the
  outage and the recovery through :class:`TransportEvents` so the core can log and count;
* its errors: every awaited method raises
  :class:`~channels_neffos.exceptions.BrokerUnavailable` (``PermissionDenied`` for a refusal),
  converted in one place per transport, never a client library's own exception.

Which subjects exist is the core's business (its name scheme): a transport is handed each one
as a :class:`Subject` that says what the transport may need to know about it — which key chooses
its server when subjects are spread over several, whether it addresses one process — so no
transport ever parses a name.

Delivery through a transport is at-most-once: what is published while the connection is down
is lost (``publish`` raises ``BrokerUnavailable``, and the core decides what to tell the user).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

#: Called with the payload of each message arriving on a subscribed subject. It runs on the
#: transport's reader, so it must not block; it may schedule work.
OnMessage = Callable[[bytes], None]


class Subject(NamedTuple):
    """A subject as the core hands it to a transport: its spelling and what it addresses."""

    #: The broker's name for it, as :meth:`Transport.subject` or :meth:`Transport.wildcard`
    #: spelled it.
    name: str
    #: The key that chooses its server when subjects are spread over several (a pid, a group,
    #: a worker channel): every subject of one process shares its pid, so the process's one
    #: pattern subscription and every publish to it meet on one server.
    shard: str
    #: Whether it addresses one process (its channels, reply inbox, questions): a publish that
    #: the broker says reached nobody is then a message lost, not an empty group.
    process: bool = False
    #: Whether it is a :meth:`Transport.wildcard` (subscribed as a pattern).
    pattern: bool = False
    #: Whether it is a group's history subject: what arrives on it is a positioned batch
    #: (:func:`pack_positioned`), published by :meth:`Transport.history_append`.
    history: bool = False


class HistoryLimits(NamedTuple):
    """How much of a group's history the broker keeps."""

    #: Messages kept (the oldest go first).
    size: int
    #: Seconds a message is kept after it was appended.
    ttl: float
    #: Seconds the group's position (epoch and latest offset) is kept after its last message,
    #: so that offsets go on where they were when the group speaks again after a silence.
    meta_ttl: float


class HistorySlice(NamedTuple):
    """What :meth:`Transport.history_read` found."""

    #: The group's epoch; ``None`` if the broker holds no position for it (never written, or
    #: lost).
    epoch: str | None
    #: The offset of the group's latest message (0: none yet).
    offset: int
    #: ``(offset, payload)`` of the messages read, oldest first, with no hole between them.
    entries: list[tuple[int, bytes]]


class HistoryUnsupported(Exception):
    """This transport keeps no history."""


def pack_positioned(epoch: str, first: int, payloads: list[bytes]) -> bytes:
    """A positioned batch as it travels on a history subject: ``<epoch>:<first offset>:``
    followed by each payload as ``<length>:<bytes>``; the payloads have the offsets ``first``,
    ``first + 1``... (The Redis script builds the same bytes.)"""
    parts = [f"{epoch}:{first}:".encode()]
    for payload in payloads:
        parts.append(b"%d:" % len(payload))
        parts.append(payload)
    return b"".join(parts)


def unpack_positioned(data: bytes) -> tuple[str, int, list[bytes]]:
    """``(epoch, first offset, payloads)`` of a positioned batch; ``ValueError`` if not one."""
    try:
        epoch, first, rest = data.split(b":", 2)
        position = int(first)
        payloads = []
        start = 0
        while start < len(rest):
            colon = rest.index(b":", start)
            end = colon + 1 + int(rest[start:colon])
            if end > len(rest):
                raise ValueError("truncated")
            payloads.append(rest[colon + 1 : end])
            start = end
        if not epoch or position < 1 or not payloads:
            raise ValueError("empty")
        return epoch.decode("ascii"), position, payloads
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a positioned batch of a history subject ({exc})") from None


class TransportEvents(Protocol):
    """What a transport tells the core about its connection and what it had to drop."""

    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def dropped(self, reason: str, where: str) -> None:
        """A message was lost where only the transport could see it (a full subscription
        buffer, a refusal of a fire-and-forget publish...); ``reason`` is a drop reason of
        :mod:`channels_neffos._drops`."""

    def request_failed(self, reply_to: str, error: Exception) -> None:
        """The request published with ``reply_to`` cannot be answered: the broker said nobody
        subscribes (``NoResponders``) or refused it (``PermissionDenied``), after the call
        that published it had returned (NATS tells the publisher only later)."""


class IgnoredEvents:
    """The TransportEvents of a transport that is never connected (built to read its ``url``)."""

    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def dropped(self, reason: str, where: str) -> None: ...

    def request_failed(self, reply_to: str, error: Exception) -> None: ...


class Transport(abc.ABC):
    """One connection (or one connection pair) to one broker, bound to one event loop."""

    #: Where the broker is, for error messages and logs (never contains a password).
    url: str
    #: The largest payload, in bytes, the broker accepts in one message.
    max_payload: int
    #: Whether :meth:`subscribe` takes a :meth:`wildcard`. Without (Redis Cluster's sharded
    #: pub/sub), each process subscribes one exact subject that all its subjects share.
    pattern_subscriptions: bool = True

    @abc.abstractmethod
    def subject(self, *parts: str) -> str:
        """The broker subject for ``parts`` (prefix first). Must be injective over the parts."""

    @abc.abstractmethod
    def wildcard(self, *parts: str) -> str:
        """A subject pattern that matches every :meth:`subject` starting with ``parts``."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect, or raise :class:`~channels_neffos.exceptions.BrokerUnavailable`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection and finish every task this transport started. Idempotent."""

    @abc.abstractmethod
    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        """Subscribe to an exact subject or a :meth:`wildcard` (``subject.pattern``); return
        once the broker confirms, so that a publish from any connection made afterwards reaches
        it."""

    @abc.abstractmethod
    async def unsubscribe(self, subject: Subject) -> None:
        """Undo :meth:`subscribe`. Unknown subjects are ignored."""

    @abc.abstractmethod
    async def publish(self, subject: Subject, payload: bytes) -> None:
        """Queue ``payload`` for ``subject`` without waiting for the broker's answer.

        Promise the core relies on: the payload is queued, in order, before the call first
        suspends (so a publish made while another is suspended goes behind it). Raises
        ``BrokerUnavailable`` while the connection is down. A loss the broker reports later
        (a refusal, a publish to a process nobody receives for) goes to
        :meth:`TransportEvents.dropped`.
        """

    @abc.abstractmethod
    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        """Publish a request to be answered on ``reply_to`` (a subject this process subscribes).

        Returns how many subscribers received it if the broker says so at once (Redis), else
        ``None``; a broker that learns of "no responders" or of a refusal later (NATS) reports
        it through :meth:`TransportEvents.request_failed`.
        """

    @abc.abstractmethod
    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        """Append to a worker queue; ``False`` if it already holds ``capacity`` items.

        Brokers that cannot know the queue's length always return ``True``. ``ttl`` (seconds)
        lets a stored queue vanish when nobody reads it. ``reply_to``: the push is a request
        (an ask), reported as for :meth:`publish_request`.
        """

    @abc.abstractmethod
    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        """Take one payload from a worker queue, waiting up to ``timeout`` seconds.

        Each payload goes to exactly one caller across all processes. Returns ``None`` on timeout.
        ``capacity``: how many payloads this process may hold for the queue's readers (a broker
        that pushes rather than lets us pop, NATS, buffers that many).
        """

    @abc.abstractmethod
    async def queue_flush(self, queues: Subject) -> None:
        """Delete every worker queue that ``queues`` (a :meth:`wildcard`) covers, and what the
        transport holds of them."""

    def registry(self) -> ProcessRegistry:
        """This broker's registry of live processes (presence); ``RegistryUnavailable`` if it
        keeps none."""
        raise RegistryUnavailable(f"{type(self).__name__} keeps no registry of processes")

    #: Whether :meth:`history_append` and :meth:`history_read` work.
    keeps_history: bool = False

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        """Append ``payloads`` to the history of ``subject`` (a group's history subject) in one
        atomic step that gives them the next offsets and publishes them, as one positioned
        batch, to the subject's subscribers — so the order subscribers see is offset order.

        Queued on the connection before this returns, without waiting for the broker's answer,
        as :meth:`publish` does (not a coroutine: the core calls it from a callback, so no task
        of its own can be cancelled with messages in it). Raises ``BrokerUnavailable`` while
        the connection is down; a refusal the broker answers later goes to
        :meth:`TransportEvents.dropped`. ``epoch`` is a fresh candidate, taken only if the
        broker holds no position for the subject.
        """
        raise HistoryUnsupported(f"{type(self).__name__} keeps no history")

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        """The kept messages of ``subject`` after offset ``since`` (the first ``limit`` of
        them), or without ``since`` the last ``limit`` (all if ``None``); messages older than
        ``limits.ttl`` are not returned."""
        raise HistoryUnsupported(f"{type(self).__name__} keeps no history")


class RegistryUnavailable(Exception):
    """This broker (or its configuration) keeps no registry of live processes."""


class ProcessRegistry(abc.ABC):
    """The broker-side list of live processes under a prefix, for presence.

    Each entry expires ``ttl`` seconds after it was last announced, by the broker's clock, so a
    process that dies without retracting vanishes within ``ttl``. Every call returns once the
    broker has applied it: after ``announce`` returns, ``announced`` from any process lists it.
    """

    @abc.abstractmethod
    async def announce(self, pid: str, ttl: float) -> None:
        """Add ``pid``, or renew its entry, for ``ttl`` seconds."""

    @abc.abstractmethod
    async def retract(self, pid: str) -> None:
        """Remove ``pid`` (the process is closing). Sent without waiting for the broker's
        answer: a closing process must not wait, and may no longer be able to read one (its
        event loop closing has cancelled its readers). Until it is applied, asking the process
        finds no responders, as its connection is closed."""

    @abc.abstractmethod
    async def announced(self) -> list[str]:
        """The pids whose entries have not expired."""


def redact_url(url: str, *, user_is_secret: bool = False) -> str:
    """``url`` with its password (and, where the user part is a token, the user) as ``***``.

    NATS takes a token as the user part alone (``nats://<token>@host``); Redis a user name.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        user = "***" if user_is_secret and not parts.username else parts.username or ""
        netloc = f"{user}:***@{parts.hostname}"
    elif parts.username and user_is_secret:
        netloc = f"***@{parts.hostname}"
    else:
        return url
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
