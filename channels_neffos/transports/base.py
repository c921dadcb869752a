"""The small interface a broker must offer: the strict cut-off between the engine and the network.

A transport moves opaque ``bytes`` between *subjects* and nothing more. It never knows about
channels, groups, mailboxes, capacity, expiry or asks — those live in the engine, once, for every
broker. What a transport does own is what really differs between brokers:

* how a subject is spelled (:meth:`Transport.subject`, :meth:`Transport.wildcard`) — ``:``-joined
  keys on Redis, ``.``-separated tokens on NATS — including escaping what the broker cannot carry;
* how a subscription is confirmed, so that after ``await subscribe(...)`` a publish from any
  other connection reaches it;
* coalescing publishes so that a sequence of ``await publish(...)`` costs no round trip each;
* worker queues (exactly one reader per message): a Redis list, a NATS queue group;
* reconnecting, and re-establishing its own subscriptions after a reconnect. It reports the
  outage and the recovery through :class:`TransportEvents` so the engine can log and count.

Delivery through a transport is at-most-once: what is published while the connection is down
is lost (``publish`` raises ``ConnectionError``, and the engine decides what to tell the user).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

#: Called with the payload of each message arriving on a subscribed subject. It runs on the
#: transport's reader, so it must not block; it may schedule work.
OnMessage = Callable[[bytes], None]


class TransportEvents(Protocol):
    """What a transport tells the engine about its connection."""

    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def no_responders(self, reply_subject: str) -> None:
        """The broker says nothing was subscribed to a subject published with ``reply_to``."""

    def dropped(self, reason: str, where: str) -> None:
        """The client library dropped a message (e.g. a full subscription buffer)."""

    def request_refused(self, reply_subject: str, reason: str) -> None:
        """The broker refused (a permission) a request published with ``reply_to``; a broker
        that tells the publisher only later (NATS) reports it here."""


class IgnoredEvents:
    """The TransportEvents of a transport that is never connected (built to read its ``url``)."""

    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def no_responders(self, reply_subject: str) -> None: ...

    def dropped(self, reason: str, where: str) -> None: ...

    def request_refused(self, reply_subject: str, reason: str) -> None: ...


class Transport(abc.ABC):
    """One connection (or one connection pair) to one broker, bound to one event loop."""

    #: Where the broker is, for error messages and logs (never contains a password).
    url: str
    #: The largest payload, in bytes, the broker accepts in one message.
    max_payload: int

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
    async def subscribe(self, subject: str, on_message: OnMessage) -> None:
        """Subscribe to an exact subject or a :meth:`wildcard`; return once the broker confirms."""

    @abc.abstractmethod
    async def unsubscribe(self, subject: str) -> None:
        """Undo :meth:`subscribe`. Unknown subjects are ignored."""

    @abc.abstractmethod
    async def publish(self, subject: str, payload: bytes, reply_to: str | None = None) -> None:
        """Queue ``payload`` for ``subject`` without waiting for the broker's answer.

        ``reply_to`` asks brokers that can (NATS) to report "no responders" for this publish
        through :meth:`TransportEvents.no_responders`. Raises ``ConnectionError`` while the
        connection is down.
        """

    @abc.abstractmethod
    async def publish_request(self, subject: str, payload: bytes, reply_to: str) -> int | None:
        """Publish a request to be answered on ``reply_to`` (a subject this process subscribes).

        Returns how many subscribers received it if the broker says so at once (Redis), else
        ``None``; a broker that learns of "no responders" later (NATS) reports it through
        :meth:`TransportEvents.no_responders`.
        """

    @abc.abstractmethod
    async def queue_push(
        self, name: str, payload: bytes, capacity: int, ttl: float, reply_to: str | None = None
    ) -> bool:
        """Append to the worker queue ``name``; ``False`` if it already holds ``capacity`` items.

        Brokers that cannot know the queue's length always return ``True``. ``ttl`` (seconds)
        lets a stored queue vanish when nobody reads it. ``reply_to`` as for :meth:`publish`.
        """

    @abc.abstractmethod
    async def queue_pop(self, name: str, timeout: float, capacity: int) -> bytes | None:
        """Take one payload from the worker queue ``name``, waiting up to ``timeout`` seconds.

        Each payload goes to exactly one caller across all processes. Returns ``None`` on timeout.
        """

    @abc.abstractmethod
    async def queue_flush(self) -> None:
        """Delete every worker queue this transport's prefix stores on the broker."""

    def registry(self) -> ProcessRegistry:
        """This broker's registry of live processes (presence); ``RegistryUnavailable`` if it
        keeps none."""
        raise RegistryUnavailable(f"{type(self).__name__} keeps no registry of processes")


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
