"""NATS transport: subjects for process channels and groups, queue groups for worker channels.

One nats-py connection per event loop carries everything. Process channels live under one
wildcard subscription ``P.<pid>.>``; each group with local members is one exact subscription
``P.g.<group>``; a worker channel is a queue subscription on ``P.q.<name>`` (queue group of the
same name), so the server hands each message to exactly one subscribed reader.

Channel and group names may contain ``.``, which NATS reads as a token separator, and may produce
empty tokens (``a..b``, a leading or trailing dot) that NATS cannot carry. Each token is escaped
on its own — an empty token becomes ``_`` and a token starting with ``_`` gets one more ``_`` —
which keeps subjects readable and the mapping injective.

Reconnecting and failover: nats-py replays every subscription on reconnect. Its pool is the
configured ``servers`` plus the servers a cluster announces (INFO ``connect_urls``), so a client
of a server that dies — its sockets close — moves to another server at once (tens of
milliseconds); a hung server or a lost host closes nothing and is left once two pings, 2 s
apart, went unanswered (4-6 s; nats-py's default would take 6 minutes). If nats-py gives up
(a finite ``max_reconnect_attempts`` in ``connect_options``), the transport connects anew every
second and subscribes everything again; calls made meanwhile raise ``BrokerUnavailable``.

What is lost — NATS core stores no message and acknowledges none:

* **Counted.** Publishes made while reconnecting wait in nats-py's buffer (``pending_size``,
  2 MiB by default) and are sent once connected; beyond it, publishes fail and the core counts
  them (``broker_down``) or raises (worker channels, asks). A buffer that will never be sent —
  the layer closed during the outage, or nats-py gave up — is counted as ``broker_down``, per
  broker message (a burst the outbox coalesced into one frame counts once).
* **Uncounted** — nobody can know it is gone: NATS has no delivery acknowledgement and the
  envelope carries no sequence numbers. Whatever was in flight when a server died or hung:
  written to its socket but not yet read (for a hung server, everything written until the pings
  expire), read but not yet forwarded to the cluster, or routed to it for its clients; and what
  other servers received for a subscriber that was moving between servers. An ask that loses
  its request or its answer ends in ``AskTimeout`` (``NoResponders`` while its receiver has no
  subscription anywhere). On a cluster, a new subscription reaches the other servers a moment
  (about a millisecond) after its own server confirmed it.
* **Worker channels** are not stored either: a message published while no reader is subscribed
  is dropped by the server, so worker channels only receive what is sent after the first
  ``receive()`` on them.

Security (credentials and TLS go in ``connect_options``, see ``docs/security.rst``):

* **Refusals are told apart, in one place** (:mod:`.nats_errors`): a wrong or missing password,
  token, NKey or creds file (``Authorization Violation``, ``Authentication Timeout``, an
  expired or revoked user), a server certificate that does not verify or a client certificate
  the server rejects, and subject permissions the user lacks (``Permissions Violation``) each
  give ``BrokerUnavailable`` with its ``cause``; ``PermissionDenied`` for permissions.
* **Fail fast.** nats-py retries a refused first connect like an unreachable server; the
  transport stops at the first authentication or TLS refusal, so the first call fails at once.
* **Permissions at run time.** The server answers a refused SUB or PUB with an asynchronous
  ``-ERR``. ``subscribe()`` and worker-channel subscriptions confirm with a PING after the SUB,
  so the refusal has arrived by then and they raise ``PermissionDenied``. A request (an ask,
  a remote ``group_add``) is not confirmed — that would cost every ask a round trip — but its
  reply subject is remembered by subject, so the ``-ERR`` naming that subject fails it with
  ``PermissionDenied`` as soon as it arrives. Every refused publish is counted as
  ``layer.counters["refused"]`` and logged at a limited rate; for a plain ``send`` or
  ``group_send`` that is all the caller can get.
* **Secrets stay out of errors and logs**: server URLs are shown with their credentials masked,
  and text from nats-py is masked for this layer's passwords, tokens and NKey seeds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._drops import RateLimitedLog
from ..exceptions import BrokerUnavailable, NoResponders, PermissionDenied
from .base import (
    HistoryLimits,
    HistorySlice,
    OnMessage,
    ProcessRegistry,
    Subject,
    Transport,
    TransportEvents,
    redact_url,
)
from .nats_errors import VIOLATION, error_cause, failure_of, mask, secrets_of
from .nats_history import NatsHistory
from .nats_registry import NatsRegistry, bucket_name

logger = logging.getLogger("channels_neffos.nats")

_DEFAULT_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "max_reconnect_attempts": -1,  # a layer outlives broker restarts
    "reconnect_time_wait": 0.5,
    # A server that dies closes its sockets and we move at once; a hung server or a lost host
    # is only noticed by unanswered pings, and everything published to it meanwhile is lost.
    # nats-py's default (120 s, 2 outstanding) takes up to 6 minutes; this takes 4-6 s.
    "ping_interval": 2,
    "max_outstanding_pings": 2,
}
#: How long the first connection may take before the layer gives up with BrokerUnavailable.
_STARTUP_TIMEOUT = 5.0
_FLUSH_TIMEOUT = 10
#: How long a callback given in ``connect_options`` may run before it is cancelled.
USER_CALLBACK_TIMEOUT = 2.0
#: How often a layer whose nats-py client gave up tries a new connection.
_REVIVE_INTERVAL = 1.0

#: Refusals remembered per subject until a caller checks them (bounded by starting afresh).
_MAX_REMEMBERED_REFUSALS = 1000
#: Requests to one subject that a refusal fails at once; older ones end at their timeout.
_REQUESTS_PER_SUBJECT = 64

_warn = RateLimitedLog(logger, logging.WARNING)


#: An empty token (leading, doubled or trailing dot) or a token starting with "_".
_NEEDS_ESCAPING = re.compile(r"(?:^|\.)(?:\.|_|$)")


def server_of(client: Client) -> str:
    """``host:port`` of the server ``client`` is (or was last) connected to, for logs (never
    its credentials)."""
    server = getattr(client, "_current_server", None)  # nats-py's; kept while reconnecting
    url = getattr(server, "uri", None)
    return f"{url.hostname}:{url.port}" if url is not None else "no server"


async def _close_unconnected(client: Client) -> None:
    """Close a client whose first connect failed. nats-py 2.7 raises ``AttributeError``
    there (it closes a transport it never opened): that must not replace the error that says
    why the connect failed."""
    try:
        await client.close()
    except Exception as exc:
        logger.debug("closing an unconnected NATS client failed: %r", exc)


async def _call_user(name: str, callback: Callable[..., Awaitable[Any]] | None, *args: Any) -> None:
    """Run a callback the user put in ``connect_options`` — bounded: nats-py awaits its
    callbacks with no limit (one that never returned made ``close()``, and so the end of any
    ``async_to_sync`` call, hang forever), and one that raises must not make the layer's
    ``close()`` raise. A callback that takes longer than :data:`USER_CALLBACK_TIMEOUT` is
    cancelled; either is logged, with the callback's name."""
    if callback is None:
        return
    try:
        await asyncio.wait_for(callback(*args), USER_CALLBACK_TIMEOUT)
    except asyncio.TimeoutError:
        logger.error(
            "the %s in connect_options did not return within %s s: cancelled (the layer's own "
            "work goes on without it)",
            name,
            USER_CALLBACK_TIMEOUT,
        )
    except Exception:
        logger.exception("the %s in connect_options raised (the layer goes on)", name)


def escape_token(token: str) -> str:
    if not token:
        return "_"
    return "_" + token if token[0] == "_" else token


class NatsTransport(Transport):
    max_payload = 1024 * 1024  # the server's real limit replaces this on connect

    def __init__(
        self,
        servers: list[str],
        connect_options: dict[str, Any],
        events: TransportEvents,
        prefix: str = "neffos",
    ) -> None:
        self._servers = servers
        self._prefix = prefix
        self._connect_options = connect_options
        self._events = events
        self.url = ", ".join(redact_url(server, user_is_secret=True) for server in servers)
        self._secrets = secrets_of(servers, connect_options)
        self._client: Client | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._queue_subscriptions: dict[str, Subscription] = {}
        self._queue_capacities: dict[str, int] = {}
        self._handlers: dict[str, OnMessage] = {}
        #: Connecting anew after nats-py closed its client for good (see closed_cb).
        self._revival: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None
        #: lowercased subject -> the server's refusal, until subscribe()/a request checks it.
        self._refused_subscriptions: dict[str, str] = {}
        #: lowercased subject -> reply subjects of requests published to it (see publish_request)
        self._requests: dict[str, list[str]] = {}
        self._history = NatsHistory(
            self._connected_client,
            self._open_client,
            prefix,
            escape_token(prefix),
            self.url,
            events,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- errors --------------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        """``text`` without this transport's passwords, tokens and NKey seeds."""
        return mask(text, self._secrets)

    def error(
        self, exc: BaseException, context: str = "", server_info: dict[str, Any] | None = None
    ) -> BrokerUnavailable:
        """The exception to raise for ``exc``: its cause named, its text masked."""
        cause = error_cause(exc, server_info)
        if cause == "TLS verification" and not isinstance(exc, ssl.SSLError):
            context += (
                "the server closed the connection after the TLS handshake; it requires a "
                "client certificate (verify) and did not accept ours: "
            )
        reason = self.mask(f"{context}{str(exc) or type(exc).__name__}")
        if cause == "permission":
            return PermissionDenied(self.url, reason)
        return BrokerUnavailable(self.url, reason, cause=cause)

    def _note_violation(self, exc: Exception) -> bool:
        """Remember or count a ``Permissions Violation``; ``False`` if ``exc`` is none."""
        violation = VIOLATION.search(str(exc))
        if violation is None:
            return False
        operation, subject = violation.groups()
        text = self.mask(str(exc))
        if operation == "publish":
            self._events.dropped("refused", f"{subject} ({self.url})")
            for reply_to in self._requests.pop(subject, ()):
                refusal = PermissionDenied(self.url, f"may not publish to {subject!r} ({text})")
                self._events.request_failed(reply_to, refusal)
            return True
        refused = self._refused_subscriptions
        _warn("subscribe", "%d subscription(s) refused by NATS at %s (latest: %s)", self.url, text)
        if len(refused) >= _MAX_REMEMBERED_REFUSALS:
            refused.clear()
        refused[subject] = text
        return True

    # -- naming --------------------------------------------------------------------------------

    def subject(self, *parts: str) -> str:
        joined = ".".join(parts)
        if _NEEDS_ESCAPING.search(joined) is None:  # the common case: nothing to escape
            return joined
        return ".".join(escape_token(token) for token in joined.split("."))

    def wildcard(self, *parts: str) -> str:
        return self.subject(*parts) + ".>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        self._client = await self._open_client()
        self.max_payload = self._client.max_payload

    async def _open_client(self) -> Client:
        """A connected nats-py client; ``BrokerUnavailable`` if no server answers in time."""
        user_options = dict(self._connect_options)
        callbacks = {
            name: user_options.pop(name, None)
            for name in ("error_cb", "disconnected_cb", "reconnected_cb", "closed_cb")
        }
        client = Client()
        #: Set to the first authentication or TLS refusal while connecting: retrying is futile.
        refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def error_cb(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                # A worker channel's subscription buffer (capacity messages) overflowed.
                self._events.dropped("channel_full", exc.subject)
                return
            if not self._note_violation(exc):
                self._last_error = exc
                info = getattr(client, "_server_info", None)  # this attempt's INFO (nats-py)
                if not refused.done() and error_cause(exc, info) != "unreachable":
                    refused.set_result(exc)
                logger.debug("NATS error at %s: %s", self.url, self.mask(str(exc)))
            await _call_user("error_cb", callbacks["error_cb"], exc)

        async def disconnected_cb() -> None:
            if not client.is_closed and self._client is client:
                logger.warning(
                    "lost connection to NATS at %s (of %s); reconnecting",
                    server_of(client),
                    self.url,
                )
                self._events.connection_lost(self._last_error)
            await _call_user("disconnected_cb", callbacks["disconnected_cb"])

        async def reconnected_cb() -> None:
            logger.warning("reconnected to NATS at %s (of %s)", server_of(client), self.url)
            self._events.connection_restored()
            await _call_user("reconnected_cb", callbacks["reconnected_cb"])

        async def closed_cb() -> None:
            # nats-py closes a client for good once it has used up max_reconnect_attempts; a
            # channel layer must outlive that, so it starts over with a new client. What the
            # old client buffered while reconnecting is never sent: count it.
            if self._client is client:
                self._discard_buffered(client, "nats-py gave up reconnecting")
            if self._client is client and self._revival is None:
                logger.warning(
                    "NATS at %s: nats-py gave up reconnecting (max_reconnect_attempts); "
                    "retrying with a new connection every %s s",
                    self.url,
                    _REVIVE_INTERVAL,
                )
                self._revival = asyncio.ensure_future(self._revive())
            await _call_user("closed_cb", callbacks["closed_cb"])

        # nats-py's own requests (the JetStream API, for presence) answer under the prefix,
        # so a user with nothing but the prefix's permissions can receive them.
        inbox = {"inbox_prefix": f"{escape_token(self._prefix)}._INBOX"}
        options = {**_DEFAULT_CONNECT_OPTIONS, **inbox, **user_options}
        # nats-py retries the *first* connect as often as later reconnects, forever by default.
        # At startup we want an answer: try each server twice, then apply the user's setting.
        reconnect_attempts = options["max_reconnect_attempts"]
        options["max_reconnect_attempts"] = 1
        connecting = asyncio.ensure_future(
            client.connect(
                servers=self._servers,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                closed_cb=closed_cb,
                **options,
            )
        )
        try:
            either: set[asyncio.Future[Any]] = {connecting, refused}
            await asyncio.wait(either, timeout=_STARTUP_TIMEOUT, return_when="FIRST_COMPLETED")
        finally:
            if not connecting.done():  # refused, timed out, or we were cancelled
                connecting.cancel()
                await _close_unconnected(client)
            await asyncio.gather(connecting, return_exceptions=True)  # retrieves its exception
        failure = failure_of(connecting, refused, self._last_error, _STARTUP_TIMEOUT)
        if failure is not None:
            await _close_unconnected(client)
            info = getattr(client, "_server_info", None)
            raise self.error(failure, server_info=info) from failure
        client.options["max_reconnect_attempts"] = reconnect_attempts
        return client

    async def _revive(self) -> None:
        """Connect anew until a server answers, then subscribe everything again."""
        try:
            while self._client is not None:
                await asyncio.sleep(_REVIVE_INTERVAL)
                try:
                    client = await self._open_client()
                except BrokerUnavailable as exc:
                    if exc.cause == "unreachable":
                        logger.debug("NATS at %s still unreachable: %s", self.url, exc)
                    else:  # the server is back but refuses us: someone must act
                        _warn(exc.cause, "%d reconnect(s) refused by NATS at %s: %s", self.url, exc)
                    continue
                if self._client is None:  # closed meanwhile
                    await client.close()
                    return
                self._client = client
                for subject, on_message in list(self._handlers.items()):
                    await self._subscribe_on(client, subject, on_message)
                for name in list(self._queue_subscriptions):
                    try:
                        await self._subscribe_queue(name, self._queue_capacities[name])
                    except PermissionDenied:
                        pass  # logged by error_cb; its readers learn at their next receive
                await self._flush(client)
                logger.warning("connected to NATS at %s again", self.url)
                self._events.connection_restored()
                return
        finally:
            self._revival = None

    async def close(self) -> None:
        if self._client is not None:
            await self._history.close()  # what history groups were sent: it needs the client
        client, self._client = self._client, None
        if self._revival is not None:
            self._revival.cancel()
            await asyncio.gather(self._revival, return_exceptions=True)
        if client is not None and not client.is_closed:
            if not client.is_connected:  # closing during an outage
                self._discard_buffered(client, "the layer closed while reconnecting")
            await client.close()

    def _discard_buffered(self, client: Client, why: str) -> None:
        """Count as ``broker_down`` what ``client`` buffered while reconnecting, and drop it.

        nats-py keeps publishes made while it reconnects (up to ``pending_size``) and sends
        them once connected again. A client that will never be connected again (closed by
        us, or given up by nats-py) would silently lose them — and nats-py's ``close()``
        writes them to the dead socket, which raises ``TypeError`` on Python 3.13. Counted per
        broker message: a burst the outbox coalesced into one frame counts once.
        """
        pending = getattr(client, "_pending", None)  # nats-py's buffer of unsent commands
        if not isinstance(pending, list) or not pending:
            return
        client._pending = []
        client._pending_data_size = 0
        ours = escape_token(self._prefix).encode() + b"."  # not JetStream calls (presence)
        for command in pending:
            if command.startswith((b"PUB ", b"HPUB ")):
                subject = command.split(b" ", 2)[1]
                if subject.startswith(ours):
                    where = f"{subject.decode(errors='replace')} ({self.url}: {why})"
                    self._events.dropped("broker_down", where)

    def _connected_client(self) -> Client:
        if self._client is None or self._client.is_closed:
            raise BrokerUnavailable(self.url, "not connected (reconnecting)")
        return self._client

    # -- pub/sub -------------------------------------------------------------------------------

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        """Subscribe and confirm; ``PermissionDenied`` if the server refuses the subject."""
        await self._subscribe(subject.name, on_message)

    async def _subscribe(self, subject: str, on_message: OnMessage) -> None:
        self._handlers[subject] = on_message  # kept for a new client after nats-py gave up
        self._refused_subscriptions.pop(subject.lower(), None)
        try:
            client = self._connected_client()
            await self._subscribe_on(client, subject, on_message)
            await self._flush(client)
        except BrokerUnavailable:
            raise
        except (OSError, nats.errors.Error) as exc:
            raise self.error(exc) from exc
        refusal = self._refused_subscriptions.pop(subject.lower(), None)
        if refusal is not None:  # the server's -ERR came before the PONG of our flush
            self._handlers.pop(subject, None)
            subscription = self._subscriptions.pop(subject, None)
            if subscription is not None and not client.is_closed:
                await subscription.unsubscribe()
            raise PermissionDenied(self.url, f"may not subscribe to {subject!r} ({refusal})")

    async def _subscribe_on(self, client: Client, subject: str, on_message: OnMessage) -> None:
        events = self._events

        async def deliver(msg: Msg) -> None:
            headers = msg.headers
            if headers and headers.get("Status") == "503":
                events.request_failed(msg.subject, NoResponders(msg.subject))
            else:
                on_message(msg.data)

        self._subscriptions[subject] = await client.subscribe(subject, cb=deliver)

    async def _flush(self, client: Client, timeout: int = _FLUSH_TIMEOUT) -> None:
        """Return once the server has processed everything sent so far (a new SUB included).

        nats-py's ``flush()`` writes its PING straight to the socket while a SUB may still sit
        in the client's pending buffer waiting for the flusher task; under load the PONG then
        comes back before the server has seen the SUB, and messages published right after
        "subscribing" are lost. So first wait until the flusher has written the buffer.
        """
        try:
            flush_pending = getattr(client, "_flush_pending", None)
            if flush_pending is not None:  # nats-py internals; without them we can only hope
                await flush_pending(force_flush=True)
            await client.flush(timeout=timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self.error(exc, "subscription not confirmed: ") from exc

    async def unsubscribe(self, subject: Subject) -> None:
        self._handlers.pop(subject.name, None)
        subscription = self._subscriptions.pop(subject.name, None)
        if subscription is not None and self._client is not None and not self._client.is_closed:
            await subscription.unsubscribe()

    async def publish(self, subject: Subject, payload: bytes) -> None:
        await self._publish(subject.name, payload, "")

    async def _publish(self, subject: str, payload: bytes, reply_to: str) -> None:
        try:
            await self._connected_client().publish(subject, payload, reply=reply_to)
        except nats.errors.Error as exc:
            raise self.error(exc, "cannot publish: ") from exc

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        await self._publish(subject.name, payload, reply_to)
        self._remember_request(subject.name, reply_to)
        return None  # the server reports "no responders" to reply_to, see subscribe()

    def _remember_request(self, subject: str, reply_to: str) -> None:
        """Keep ``reply_to`` so that a refusal of ``subject`` (it comes as an error some time
        later, naming only the subject) fails the request at once instead of at its timeout.
        Waiting for the server's PONG instead would cost every ask a round trip (-30% asks/s)."""
        requests = self._requests
        if len(requests) >= _MAX_REMEMBERED_REFUSALS:
            requests.clear()  # stale entries only fail requests that are gone already
        waiting = requests.setdefault(subject.lower(), [])
        if len(waiting) >= _REQUESTS_PER_SUBJECT:
            del waiting[0]
        waiting.append(reply_to)

    # -- worker queues -------------------------------------------------------------------------

    # -- presence ------------------------------------------------------------------------------

    def registry(self) -> ProcessRegistry:
        return NatsRegistry(self._connected_client, bucket_name(self._prefix), self.url)

    # -- history (see nats_history) ------------------------------------------------------------

    keeps_history = True

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        self._history.append(subject, payloads, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        return await self._history.read(subject, since, limit, limits)

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        await self._publish(queue.name, payload, reply_to or "")
        if reply_to is not None:  # an ask: tell the asker if the server refuses it
            self._remember_request(queue.name, reply_to)
        return True

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        name = queue.name
        try:
            subscription = self._queue_subscriptions.get(name)
            if subscription is None:
                subscription = await self._subscribe_queue(name, capacity)
            msg = await subscription.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            return None
        except nats.errors.Error as exc:
            raise self.error(exc, "cannot receive: ") from exc
        data: bytes = msg.data
        return data

    async def _subscribe_queue(self, name: str, capacity: int) -> Subscription:
        """Join the queue group ``name``; ``PermissionDenied`` if the server refuses it."""
        client = self._connected_client()
        self._refused_subscriptions.pop(name.lower(), None)
        subscription = await client.subscribe(name, queue=name, pending_msgs_limit=capacity)
        self._queue_subscriptions[name] = subscription
        self._queue_capacities[name] = capacity
        await self._flush(client)
        refusal = self._refused_subscriptions.pop(name.lower(), None)
        if refusal is not None:
            del self._queue_subscriptions[name]
            await subscription.unsubscribe()
            raise PermissionDenied(self.url, f"may not subscribe to {name!r} ({refusal})")
        return subscription

    async def queue_flush(self, queues: Subject) -> None:
        """NATS stores nothing for worker channels; what our subscriptions hold is dropped.

        Each subscription is replaced by a new one at once, so that messages sent after the
        flush reach readers that were already waiting (they move to the new subscription at
        their next poll, within a second) instead of finding nobody subscribed.
        """
        subscriptions, self._queue_subscriptions = self._queue_subscriptions, {}
        try:
            for name, subscription in subscriptions.items():
                await subscription.unsubscribe()
                await self._subscribe_queue(name, self._queue_capacities[name])
        except nats.errors.Error as exc:
            raise self.error(exc, "flushing worker channels: ") from exc
