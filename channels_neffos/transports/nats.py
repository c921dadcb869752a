"""NATS transport: subjects for process channels and groups, queue groups for worker channels.

One nats-py connection per event loop carries everything. Process channels live under one
wildcard subscription ``P.<pid>.>``; each group with local members is one exact subscription
``P.g.<group>``; a worker channel is a queue subscription on ``P.q.<name>`` (queue group of the
same name), so the server hands each message to exactly one subscribed reader.

Channel and group names may contain ``.``, which NATS reads as a token separator, and may produce
empty tokens (``a..b``, a leading or trailing dot) that NATS cannot carry. Each token is escaped
on its own — an empty token becomes ``_`` and a token starting with ``_`` gets one more ``_`` —
which keeps subjects readable and the mapping injective.

What is lost: nats-py buffers publishes (``pending_size``, 2 MiB by default) during a reconnect and
sends them afterwards; beyond that buffer, publishes fail and the engine logs and counts them.
Nothing is stored by the server (no JetStream): a worker-channel message published while no
reader is subscribed is dropped by the server, so worker channels only receive what is sent after
the first ``receive()`` on them. nats-py re-subscribes everything on reconnect. If nats-py gives
up (a finite ``max_reconnect_attempts`` in ``connect_options``), the transport connects anew every
second and subscribes everything again; calls made meanwhile raise ``BrokerUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..exceptions import BrokerUnavailable
from .base import OnMessage, Transport, TransportEvents, redact_url

logger = logging.getLogger("channels_neffos.nats")

_DEFAULT_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "max_reconnect_attempts": -1,  # a layer outlives broker restarts
    "reconnect_time_wait": 0.5,
}
#: How long the first connection may take before the layer gives up with BrokerUnavailable.
_STARTUP_TIMEOUT = 5.0
_FLUSH_TIMEOUT = 10
#: How often a layer whose nats-py client gave up tries a new connection.
_REVIVE_INTERVAL = 1.0


#: An empty token (leading, doubled or trailing dot) or a token starting with "_".
_NEEDS_ESCAPING = re.compile(r"(?:^|\.)(?:\.|_|$)")


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
    ) -> None:
        self._servers = servers
        self._connect_options = connect_options
        self._events = events
        self.url = ", ".join(redact_url(server, user_is_secret=True) for server in servers)
        self._client: Client | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._queue_subscriptions: dict[str, Subscription] = {}
        self._queue_capacities: dict[str, int] = {}
        self._handlers: dict[str, OnMessage] = {}
        #: Connecting anew after nats-py closed its client for good (see closed_cb).
        self._revival: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None

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

        async def error_cb(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                # A worker channel's subscription buffer (capacity messages) overflowed.
                self._events.dropped("channel_full", exc.subject)
                return
            self._last_error = exc
            logger.debug("NATS error at %s: %s", self.url, exc)
            if callbacks["error_cb"] is not None:
                await callbacks["error_cb"](exc)

        async def disconnected_cb() -> None:
            if self._client is client and not client.is_closed:
                logger.warning("lost connection to NATS at %s; reconnecting", self.url)
                self._events.connection_lost(self._last_error)
            if callbacks["disconnected_cb"] is not None:
                await callbacks["disconnected_cb"]()

        async def reconnected_cb() -> None:
            logger.warning("reconnected to NATS at %s", self.url)
            self._events.connection_restored()
            if callbacks["reconnected_cb"] is not None:
                await callbacks["reconnected_cb"]()

        async def closed_cb() -> None:
            # nats-py closes a client for good once it has used up max_reconnect_attempts; a
            # channel layer must outlive that, so it starts over with a new client.
            if self._client is client and self._revival is None:
                logger.warning(
                    "NATS at %s: nats-py gave up reconnecting (max_reconnect_attempts); "
                    "retrying with a new connection every %s s",
                    self.url,
                    _REVIVE_INTERVAL,
                )
                self._revival = asyncio.ensure_future(self._revive())
            if callbacks["closed_cb"] is not None:
                await callbacks["closed_cb"]()

        options = {**_DEFAULT_CONNECT_OPTIONS, **user_options}
        # nats-py retries the *first* connect as often as later reconnects, forever by default.
        # At startup we want an answer: try each server twice, then apply the user's setting.
        reconnect_attempts = options["max_reconnect_attempts"]
        options["max_reconnect_attempts"] = 1
        try:
            await asyncio.wait_for(
                client.connect(
                    servers=self._servers,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    closed_cb=closed_cb,
                    **options,
                ),
                _STARTUP_TIMEOUT,
            )
        except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
            await client.close()
            raise BrokerUnavailable(self.url, self._last_error or exc) from exc
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
                    logger.debug("NATS at %s still unreachable: %s", self.url, exc)
                    continue
                if self._client is None:  # closed meanwhile
                    await client.close()
                    return
                self._client = client
                for subject, on_message in list(self._handlers.items()):
                    await self._subscribe_on(client, subject, on_message)
                for name in list(self._queue_subscriptions):
                    await self._subscribe_queue(name, self._queue_capacities[name])
                await self._flush(client)
                logger.warning("connected to NATS at %s again", self.url)
                self._events.connection_restored()
                return
        finally:
            self._revival = None

    async def close(self) -> None:
        client, self._client = self._client, None
        if self._revival is not None:
            self._revival.cancel()
            await asyncio.gather(self._revival, return_exceptions=True)
        if client is not None and not client.is_closed:
            await client.close()

    def _connected_client(self) -> Client:
        if self._client is None or self._client.is_closed:
            raise ConnectionError(f"not connected to NATS at {self.url} (reconnecting)")
        return self._client

    # -- pub/sub -------------------------------------------------------------------------------

    async def subscribe(self, subject: str, on_message: OnMessage) -> None:
        self._handlers[subject] = on_message  # kept for a new client after nats-py gave up
        try:
            client = self._connected_client()
            await self._subscribe_on(client, subject, on_message)
            await self._flush(client)
        except (ConnectionError, nats.errors.Error) as exc:
            raise BrokerUnavailable(self.url, exc) from exc

    async def _subscribe_on(self, client: Client, subject: str, on_message: OnMessage) -> None:
        events = self._events

        async def deliver(msg: Msg) -> None:
            headers = msg.headers
            if headers and headers.get("Status") == "503":
                events.no_responders(msg.subject)
            else:
                on_message(msg.data)

        self._subscriptions[subject] = await client.subscribe(subject, cb=deliver)

    async def _flush(self, client: Client) -> None:
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
            await client.flush(timeout=_FLUSH_TIMEOUT)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BrokerUnavailable(self.url, f"subscription not confirmed: {exc}") from exc

    async def unsubscribe(self, subject: str) -> None:
        self._handlers.pop(subject, None)
        subscription = self._subscriptions.pop(subject, None)
        if subscription is not None and self._client is not None and not self._client.is_closed:
            await subscription.unsubscribe()

    async def publish(self, subject: str, payload: bytes, reply_to: str | None = None) -> None:
        try:
            await self._connected_client().publish(subject, payload, reply=reply_to or "")
        except nats.errors.Error as exc:
            raise ConnectionError(f"cannot publish to NATS at {self.url}: {exc!r}") from exc

    async def publish_request(self, subject: str, payload: bytes, reply_to: str) -> int | None:
        await self.publish(subject, payload, reply_to)
        return None  # the server reports "no responders" to reply_to, see subscribe()

    # -- worker queues -------------------------------------------------------------------------

    async def queue_push(
        self, name: str, payload: bytes, capacity: int, ttl: float, reply_to: str | None = None
    ) -> bool:
        await self.publish(name, payload, reply_to)
        return True

    async def queue_pop(self, name: str, timeout: float, capacity: int) -> bytes | None:
        subscription = self._queue_subscriptions.get(name)
        if subscription is None:
            subscription = await self._subscribe_queue(name, capacity)
        try:
            msg = await subscription.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            return None
        except nats.errors.Error as exc:
            raise ConnectionError(f"cannot receive from NATS at {self.url}: {exc!r}") from exc
        return msg.data

    async def _subscribe_queue(self, name: str, capacity: int) -> Subscription:
        client = self._connected_client()
        subscription = await client.subscribe(name, queue=name, pending_msgs_limit=capacity)
        self._queue_subscriptions[name] = subscription
        self._queue_capacities[name] = capacity
        await self._flush(client)
        return subscription

    async def queue_flush(self) -> None:
        """NATS stores nothing for worker channels; what our subscriptions hold is dropped.

        Each subscription is replaced by a new one at once, so that messages sent after the
        flush reach readers that were already waiting (they move to the new subscription at
        their next poll, within a second) instead of finding nobody subscribed.
        """
        subscriptions, self._queue_subscriptions = self._queue_subscriptions, {}
        for name, subscription in subscriptions.items():
            await subscription.unsubscribe()
            await self._subscribe_queue(name, self._queue_capacities[name])
