"""Redis transport: pub/sub for process channels and groups, lists for worker channels.

Connections (per event loop): one *command* connection, pipelined, that carries every PUBLISH and
list push; one *pub/sub* connection, opened on first subscribe, that carries the process pattern
``P:<pid>:*`` and one exact ``SUBSCRIBE P:g:<group>`` per group with local members; and, only
while a worker channel is being received, pooled connections for the blocking ``BRPOP``.

Worker channels are lists ``P:q:<name>``: ``LPUSH`` + ``BRPOP`` give FIFO order and exactly one
reader per message; a Lua script refuses the push when the list holds ``capacity`` items (so the
sender gets ``ChannelFull``) and renews the key's TTL so unread lists vanish.

What is lost: PUBLISHes issued while the command connection is down (the engine logs and counts
them), and pub/sub messages published while the pub/sub connection is down (Redis pub/sub keeps
nothing). Subscriptions are re-issued on reconnect. List items survive outages of this client.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisError

from ..exceptions import BrokerUnavailable
from ._resp import ConnectionSource, RespConnection, pack
from .base import OnMessage, Transport, TransportEvents, redact_url

logger = logging.getLogger("channels_neffos.redis")

#: Redis' own limit on one bulk string (proto-max-bulk-len), less room for the command.
REDIS_MAX_PAYLOAD = 512 * 1024 * 1024 - 4096
_SUBSCRIBE_TIMEOUT = 10.0

# KEYS[1] list, ARGV: payload, capacity, ttl seconds. Returns 1 if pushed, 0 if full.
_PUSH_IF_ROOM = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisCommandError(RedisError):
    """Redis answered a command with an error reply."""


def connection_pool(host: str | dict[str, Any]) -> tuple[ConnectionPool, str]:
    """A redis-py pool for one ``hosts`` entry, and its address with the password removed."""
    defaults: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": 5}
    if isinstance(host, str):
        return ConnectionPool.from_url(host, **defaults), redact_url(host)
    options = dict(host)
    address = options.pop("address", None)
    if isinstance(address, str):
        return ConnectionPool.from_url(address, **{**defaults, **options}), redact_url(address)
    if isinstance(address, (tuple, list)):
        options["host"], options["port"] = address
    pool = ConnectionPool(**{**defaults, **options})
    where = options.get("path") or f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
    return pool, f"redis://{where}"


class RedisTransport(Transport):
    max_payload = REDIS_MAX_PAYLOAD

    def __init__(
        self,
        host: str | dict[str, Any],
        prefix: str,
        events: TransportEvents,
        *,
        pool: tuple[ConnectionSource, str] | None = None,
    ) -> None:
        # ``pool``: the (pool, url) to open connections from, instead of one made from ``host``.
        source: tuple[ConnectionSource, str] = pool or connection_pool(host)
        self._pool, self.url = source
        self._host = host
        self._prefix = prefix
        self._events = events
        # One entry per command written on the command connection, in order: the future
        # awaiting its reply, or None for fire-and-forget PUBLISHes.
        self._reply_waiters: deque[asyncio.Future[Any] | None] = deque()
        self._commands = RespConnection(
            self._pool, self.url, self._on_command_reply, self._on_commands_lost, self._restored
        )
        self._pubsub: RespConnection | None = None
        self._pubsub_lock = asyncio.Lock()
        self._channel_handlers: dict[bytes, OnMessage] = {}
        self._pattern_handlers: dict[bytes, OnMessage] = {}
        self._confirmations: dict[bytes, list[asyncio.Future[None]]] = {}
        self._blocking_client: Redis | None = None

    # -- naming --------------------------------------------------------------------------------

    def subject(self, *parts: str) -> str:
        return ":".join(parts)

    def wildcard(self, *parts: str) -> str:
        return ":".join((*parts, "*"))

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._open(self._commands)

    async def _open(self, connection: RespConnection) -> None:
        try:
            await connection.connect()
        except (OSError, RedisError, asyncio.TimeoutError) as exc:
            raise BrokerUnavailable(self.url, exc) from exc

    async def close(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.close()
        await self._commands.close()
        self._fail_reply_waiters(ConnectionError("the channel layer was closed"))
        if self._blocking_client is not None:
            await self._blocking_client.aclose()
        await self._pool.disconnect()

    async def _restored(self) -> None:
        self._events.connection_restored()

    def _on_commands_lost(self, reason: BaseException) -> None:
        self._fail_reply_waiters(ConnectionError(f"lost connection to Redis at {self.url}"))
        self._events.connection_lost(reason)

    def _fail_reply_waiters(self, error: Exception) -> None:
        waiters, self._reply_waiters = self._reply_waiters, deque()
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    # -- commands ------------------------------------------------------------------------------

    def _on_command_reply(self, reply: Any) -> None:
        waiter = self._reply_waiters.popleft()
        if waiter is None:
            if isinstance(reply, hiredis.ReplyError):
                logger.error("Redis at %s refused a PUBLISH: %s", self.url, reply)
        elif not waiter.done():
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RedisCommandError(str(reply)))
            else:
                waiter.set_result(reply)

    async def _command(self, command: bytes) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._commands.write(command)
        self._reply_waiters.append(waiter)
        return await waiter

    async def publish(self, subject: str, payload: bytes, reply_to: str | None = None) -> None:
        self._commands.write(pack(b"PUBLISH", subject, payload))
        self._reply_waiters.append(None)
        if self._commands.congested:  # checked, not awaited, on the hot path
            await self._commands.wait_writable()

    async def publish_request(self, subject: str, payload: bytes, reply_to: str) -> int | None:
        # The reply address travels in the envelope; PUBLISH's answer is the receiver count.
        return int(await self._command(pack(b"PUBLISH", subject, payload)))

    # -- pub/sub -------------------------------------------------------------------------------

    async def _pubsub_connection(self) -> RespConnection:
        async with self._pubsub_lock:
            if self._pubsub is None:
                pubsub = RespConnection(
                    self._pool,
                    self.url,
                    self._on_pubsub_reply,
                    self._on_pubsub_lost,
                    self._resubscribe,
                )
                await self._open(pubsub)
                self._pubsub = pubsub
            return self._pubsub

    async def subscribe(self, subject: str, on_message: OnMessage) -> None:
        pubsub = await self._pubsub_connection()
        key = subject.encode()
        is_pattern = subject.endswith("*")
        (self._pattern_handlers if is_pattern else self._channel_handlers)[key] = on_message
        if not pubsub.connected:
            return  # re-issued by _resubscribe once the connection is back
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(key, []).append(confirmed)
        pubsub.write(pack(b"PSUBSCRIBE" if is_pattern else b"SUBSCRIBE", key))
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), _SUBSCRIBE_TIMEOUT)
        except asyncio.TimeoutError as exc:
            raise BrokerUnavailable(self.url, f"no confirmation of SUBSCRIBE {subject}") from exc

    async def unsubscribe(self, subject: str) -> None:
        key = subject.encode()
        is_pattern = subject.endswith("*")
        handlers = self._pattern_handlers if is_pattern else self._channel_handlers
        if handlers.pop(key, None) is None or self._pubsub is None or not self._pubsub.connected:
            return
        self._pubsub.write(pack(b"PUNSUBSCRIBE" if is_pattern else b"UNSUBSCRIBE", key))

    def _on_pubsub_reply(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"pmessage":
            handler = self._pattern_handlers.get(reply[1])
            payload = reply[3]
        elif kind == b"message":
            handler = self._channel_handlers.get(reply[1])
            payload = reply[2]
        else:
            if kind in (b"subscribe", b"psubscribe"):
                for confirmed in self._confirmations.pop(reply[1], ()):
                    if not confirmed.done():
                        confirmed.set_result(None)
            return
        if handler is not None:
            handler(payload)

    def _on_pubsub_lost(self, reason: BaseException) -> None:
        self._events.connection_lost(reason)

    async def _resubscribe(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        if self._channel_handlers:
            pubsub.write(pack(b"SUBSCRIBE", *self._channel_handlers))
        if self._pattern_handlers:
            pubsub.write(pack(b"PSUBSCRIBE", *self._pattern_handlers))
        self._events.connection_restored()

    # -- worker queues -------------------------------------------------------------------------

    async def queue_push(
        self, name: str, payload: bytes, capacity: int, ttl: float, reply_to: str | None = None
    ) -> bool:
        # A list cannot tell whether anyone reads it: asks to an unread worker channel time out.
        command = pack(b"EVAL", _PUSH_IF_ROOM, 1, name, payload, capacity, max(1, int(ttl) + 1))
        return bool(await self._command(command))

    def _blocking(self) -> Redis | RedisCluster:
        """The redis-py client for blocking pops and flushes (its own connections)."""
        if self._blocking_client is None:
            pool, _ = connection_pool(self._host)
            self._blocking_client = Redis(connection_pool=pool)
        return self._blocking_client

    async def queue_pop(self, name: str, timeout: float, capacity: int) -> bytes | None:
        try:
            popped = await self._blocking().brpop([name], timeout=timeout)
        except (OSError, RedisError) as exc:
            raise ConnectionError(f"cannot pop from Redis at {self.url}: {exc}") from exc
        if popped is None:
            return None
        payload = popped[1]
        return payload if isinstance(payload, bytes) else payload.encode()

    async def queue_flush(self) -> None:
        client = self._blocking()
        keys = [key async for key in client.scan_iter(match=f"{self._prefix}:q:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
