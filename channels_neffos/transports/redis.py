"""Redis transport: pub/sub for process channels and groups, lists for worker channels.

Connections (per event loop): one *command* connection, pipelined, that carries every PUBLISH and
list push; one *pub/sub* connection, opened on first subscribe, that carries the process pattern
``P:<pid>:*`` and one exact ``SUBSCRIBE P:g:<group>`` per group with local members; and, only
while a worker channel is being received, pooled connections for the blocking ``BRPOP``.

Worker channels are lists ``P:q:<name>``: ``LPUSH`` + ``BRPOP`` give FIFO order and exactly one
reader per message; a Lua script refuses the push when the list holds ``capacity`` items (so the
sender gets ``ChannelFull``) and renews the key's TTL so unread lists vanish.

What is lost, and how it is counted (``layer.counters``, reasons in :mod:`channels_neffos._drops`):

* PUBLISHes issued while the command connection is down: ``broker_down`` (counted by the core).
* PUBLISHes written but not yet confirmed when the command connection drops: ``unconfirmed`` —
  each may or may not have arrived (Redis may have run it and died before answering).
* A PUBLISH to a process's subject (its channels, its ask replies: ``Subject.process``) that
  Redis says no subscriber received: ``no_subscriber`` — the process is gone, or has not yet
  re-subscribed after a reconnect (e.g. on a new master after a failover). A group PUBLISH
  that reaches fewer processes than hold members cannot be told from one that reaches all:
  that loss is not counted.
* Pub/sub messages published while this process's pub/sub connection is down never reach it
  (Redis pub/sub keeps nothing); the publisher counts them as ``no_subscriber`` where it can
  (above). Subscriptions are re-issued on reconnect. List items survive outages of this client.

Each count is per PUBLISH, that is per broker message: a frame that coalesced several sends
(:mod:`channels_neffos._core.outbox`) counts once.

Sentinel (``hosts`` entries with ``sentinels`` and ``master_name``; the guarantees are in
:mod:`~channels_neffos.transports.sentinel`): every connection — command, pub/sub, and the pooled
ones for ``BRPOP`` — is opened to the master the sentinels name, checked with ``ROLE``. When the
sentinels announce a new master (``+switch-master``; watched from one second after connecting),
connections open to another server are ended and reopened to it, and those already reconnecting
try at once; a lost connection otherwise retries with the usual backoff (≤ ~1 s between
attempts). A ``READONLY`` answer — a master demoted while we stayed connected — ends the command
connection the same way; the command it answered raises ``ConnectionError``
(``BrokerUnavailable`` to the caller). A ``BRPOP`` that fails is retried at once, then once more
after waiting (within its timeout) for a new master to be announced, before the failure is
reported.

Refusals and secrets (``docs/security.rst``):

* Every failure to connect — and every failure or refusal of a command whose answer someone
  awaits — becomes :class:`~channels_neffos.exceptions.BrokerUnavailable` in one place,
  :meth:`RedisTransport.broker_unavailable` (applied by the transport's
  :class:`~.redis_connect.BrokerErrors`), with its ``cause``: ``"authentication"`` (wrong or
  missing password, unknown ACL user), ``"TLS verification"`` (server certificate not trusted or
  for another name; the server dropped the handshake, as it does when it wants a client
  certificate), ``"permission"`` (an ACL ``NOPERM``: :class:`PermissionDenied`), ``"error"``
  (another error reply), else ``"unreachable"``. Nothing retries first: a wrong setting fails
  the first call at once.
* Awaited commands that the ACL refuses — the worker-channel push (``EVAL``), an ask's
  ``PUBLISH``, ``SUBSCRIBE``/``PSUBSCRIBE`` (Redis answers those with an error on the pub/sub
  connection, which is matched to the command it answers) — raise ``PermissionDenied`` to the
  caller. A refused fire-and-forget ``PUBLISH`` is a drop: counted in
  ``layer.counters["refused"]`` and logged, rate-limited.
* Error messages and ``transport.url`` show addresses with secrets masked (``:***@``, and
  ``password=***`` in a query), for URL and dict hosts alike; a redis-py error whose text held
  one of the configured secrets would not be chained.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio import Redis

from ..exceptions import BrokerUnavailable, PermissionDenied
from . import redis_history
from ._resp import ConnectionSource, RespConnection, pack
from .base import (
    HistoryLimits,
    HistorySlice,
    OnMessage,
    ProcessRegistry,
    Subject,
    Transport,
    TransportEvents,
)
from .redis_connect import (
    REDIS_FAILURES,
    ErrorConversion,
    RedisCommandError,
    connection_source,
    host_secrets,
)
from .redis_registry import RedisRegistry, registry_key
from .redis_slots import key_slot

logger = logging.getLogger("channels_neffos.redis")

#: Redis' own limit on one bulk string (proto-max-bulk-len), less room for the command.
REDIS_MAX_PAYLOAD = 512 * 1024 * 1024 - 4096
_SUBSCRIBE_TIMEOUT = 10.0
#: How long ``close()`` waits for Redis to answer what was written before it (seconds).
_CLOSE_DRAIN_TIMEOUT = 5.0
#: Under Sentinel, listen for new masters once a transport has lived this long (seconds): event
#: loops that only run one call (``async_to_sync``) never open those subscriptions.
_FOLLOW_AFTER = 1.0

# KEYS[1] list, ARGV: payload, capacity, ttl seconds. Returns 1 if pushed, 0 if full.
_PUSH_IF_ROOM = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisTransport(Transport):
    max_payload = REDIS_MAX_PAYLOAD

    def __init__(
        self,
        host: str | dict[str, Any],
        prefix: str,
        events: TransportEvents,
        *,
        pool: tuple[ConnectionSource, str] | None = None,
        sharded: bool = False,
        on_moved: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        # ``pool``: the (source, url) to open connections from, instead of one made from ``host``.
        # ``sharded``: one node of a Redis Cluster, in sharded pub/sub (SPUBLISH, SSUBSCRIBE);
        # ``on_moved`` is then told of the shard channels whose slot this node no longer serves.
        source: tuple[ConnectionSource, str] = pool or connection_source(host)
        self._pool, self.url = source
        #: Every Redis failure in an awaited call leaves as BrokerUnavailable, converted here.
        self._conversion = ErrorConversion(self.url, host_secrets(host))
        self._errors = self._conversion.errors
        self._connect_errors = self._conversion.connect_errors
        # Sentinel: a READONLY answer means our server was demoted, and a new master waits.
        self._failovers = self._pool.failovers
        self._follow_timer: asyncio.TimerHandle | None = None
        self._following = False
        self._master_announced: tuple[str, int] | None = None
        # Whether PUBLISH's answer counts every subscriber, so that 0 to a process's subject
        # means it was lost. Not on a Redis Cluster node, which counts only its own (that
        # transport's publish_request returns None for the same reason).
        self._counts_receivers = type(self).publish_request is RedisTransport.publish_request
        self._prefix = self.prefix = prefix
        self._events = events
        self._sharded = sharded
        self._on_moved = on_moved
        self._publish_command = b"SPUBLISH" if sharded else b"PUBLISH"
        self._subscribe_command = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe_command = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        # One entry per command written on the command connection, in order: the future
        # awaiting its reply, the subject of a fire-and-forget PUBLISH, or None for another
        # fire-and-forget command (a presence EVAL).
        self._reply_waiters: deque[asyncio.Future[Any] | Subject | None] = deque()
        self._commands = RespConnection(
            self._pool, self.url, self._on_command_reply, self._on_commands_lost, self._restored
        )
        self._pubsub: RespConnection | None = None
        self._pubsub_lock = asyncio.Lock()
        self._channel_handlers: dict[bytes, OnMessage] = {}
        self._pattern_handlers: dict[bytes, OnMessage] = {}
        # Commands written on the pub/sub connection whose replies are due, oldest first: Redis
        # answers each subject of a (P)(UN)SUBSCRIBE in turn, or the whole command with one error.
        self._pubsub_pending: deque[_PubSubCommand] = deque()
        # SUBSCRIBE confirmations awaited when the connection dropped: due after _resubscribe.
        self._unconfirmed: dict[bytes, list[asyncio.Future[None]]] = {}
        self._blocking_client: Redis | None = None

    # -- naming --------------------------------------------------------------------------------

    def subject(self, *parts: str) -> str:
        return ":".join(parts)

    def wildcard(self, *parts: str) -> str:
        return ":".join((*parts, "*"))

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._open(self._commands)
        if self._failovers is not None and self._follow_timer is None:
            self._follow_timer = asyncio.get_running_loop().call_later(
                _FOLLOW_AFTER, self._follow_master
            )

    def _follow_master(self) -> None:
        if self._failovers is not None and not self._following:
            self._following = True
            self._failovers.follow(self._master_switched)

    def _master_switched(self, host: str, port: int) -> None:
        """The sentinels announce ``host:port`` as the master: leave any other server now."""
        if (host, port) == self._master_announced:
            return  # every sentinel announces it in turn
        self._master_announced = (host, port)
        reason = ConnectionError(f"the sentinels announced a new master, {host}:{port}")
        for connection in (self._commands, self._pubsub):
            if connection is not None and connection.connected and connection.peer != (host, port):
                logger.warning("Redis at %s: %s; moving there", self.url, reason)
                connection.drop(reason)
        # A BRPOP waiting on the old master: its pool leaves by itself (see blocking_pool).

    async def _open(self, connection: RespConnection) -> None:
        with self._connect_errors:
            await connection.connect()

    def broker_unavailable(
        self, exc: BaseException, *, connecting: bool = False
    ) -> BrokerUnavailable:
        """The BrokerUnavailable (PermissionDenied for a permission) that ``exc`` means."""
        return self._conversion.broker_unavailable(exc, connecting=connecting)

    def _converted(self, exc: BaseException, *, connecting: bool = False) -> BrokerUnavailable:
        return self._conversion.converted(exc, connecting=connecting)

    def _chainable(self, exc: BaseException) -> BaseException | None:
        return self._conversion.chainable(exc)

    async def close(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.cancel()
        if self._following and self._failovers is not None:
            self._following = False
            await self._failovers.unfollow(self._master_switched)
        await self._drain_commands()
        if self._pubsub is not None:
            await self._pubsub.close()
        await self._commands.close()
        # What Redis has not confirmed by now may or may not have run: counted, not silent.
        self._fail_reply_waiters(ConnectionError("the channel layer was closed"), unconfirmed=True)
        if self._blocking_client is not None:
            await self._blocking_client.aclose(close_connection_pool=True)
        await self._pool.disconnect()

    async def _drain_commands(self) -> None:
        """Wait (up to ``_CLOSE_DRAIN_TIMEOUT``) until Redis has answered every command written
        so far: a ``PING`` behind them, answered in order. Closing a socket whose replies are
        still unread makes the kernel reset it, and Redis then drops the commands it had
        received but not yet run: without this, a ``close()`` right after a burst of publishes
        lost part of the burst, uncounted. When the loop is ending (``asyncio.run`` and
        ``async_to_sync`` cancel every task, our reader too, before the loop closes), the reader
        is started again for this."""
        if not self._reply_waiters or not self._commands.resume_reading():
            return
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answered.add_done_callback(_retrieve)  # failed by close() if it came too late
        try:
            self._commands.write(pack(b"PING"))
        except ConnectionError:
            return
        self._reply_waiters.append(answered)
        try:
            await asyncio.wait_for(asyncio.shield(answered), _CLOSE_DRAIN_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError, RedisCommandError, BrokerUnavailable):
            pass  # what is still unanswered is counted as unconfirmed by close()

    async def _restored(self) -> None:
        self._events.connection_restored()

    def _on_commands_lost(self, reason: BaseException) -> None:
        self._fail_reply_waiters(
            ConnectionError(f"lost connection to Redis at {self.url}"), unconfirmed=True
        )
        self._events.connection_lost(reason)

    def _fail_reply_waiters(self, error: Exception, *, unconfirmed: bool = False) -> None:
        """Fail every awaited command; with ``unconfirmed``, count each PUBLISH still waiting
        for its answer as ``unconfirmed`` (on a lost connection; on close they were flushed)."""
        waiters, self._reply_waiters = self._reply_waiters, deque()
        for waiter in waiters:
            if isinstance(waiter, Subject):
                if unconfirmed:
                    self._events.dropped("unconfirmed", f"PUBLISH {waiter.name} ({self.url})")
            elif waiter is not None and not waiter.done():
                waiter.set_exception(error)

    @property
    def connected(self) -> bool:
        """Whether the command connection is up."""
        return self._commands.connected

    @property
    def reconnecting(self) -> bool:
        """Whether the command connection was lost and is trying to come back by itself."""
        return self._commands.reconnecting

    async def execute(self, *args: bytes | str | int) -> Any:
        """Run one command on the command connection and return its answer."""
        return await self._command(pack(*args))

    # -- commands ------------------------------------------------------------------------------

    def _on_command_reply(self, reply: Any) -> None:
        waiter = self._reply_waiters.popleft()
        if type(waiter) is Subject:  # the common case: a PUBLISH (type() is cheaper here)
            if reply == 0 and self._counts_receivers and waiter.process:
                self._events.dropped("no_subscriber", f"PUBLISH {waiter.name} ({self.url})")
            elif isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("NOPERM"):
                    self._events.dropped("refused", f"PUBLISH {waiter.name} ({self.url})")
                elif self._moved(reply, [waiter.name.encode()]):
                    self._events.dropped("moved", f"SPUBLISH {waiter.name} ({self.url})")
                elif self._demoted(reply):  # a history append reached a replica (Sentinel)
                    self._events.dropped("demoted", f"{waiter.name} ({self.url})")
                else:
                    self._events.dropped("refused", f"{waiter.name} ({self.url}): {reply}")
                    logger.error(
                        "Redis at %s refused a PUBLISH to %s: %s", self.url, waiter.name, reply
                    )
        elif waiter is None:  # a fire-and-forget command other than PUBLISH
            if isinstance(reply, hiredis.ReplyError) and not self._demoted(reply):
                logger.error("Redis at %s refused a command: %s", self.url, reply)
        elif not (waiter := cast("asyncio.Future[Any]", waiter)).done():
            if isinstance(reply, hiredis.ReplyError):
                if self._demoted(reply):
                    waiter.set_exception(
                        ConnectionError(f"Redis at {self.url} was demoted to a replica: {reply}")
                    )
                else:
                    waiter.set_exception(self._reply_error(reply))
            else:
                waiter.set_result(reply)

    def _demoted(self, reply: hiredis.ReplyError) -> bool:
        """Whether ``reply`` says our master became a replica under Sentinel; if so, end the
        command connection so that it reconnects to the master the sentinels name now."""
        if self._failovers is None or not str(reply).startswith("READONLY"):
            return False
        logger.warning(
            "Redis at %s answered READONLY: the server we use was demoted to a replica; "
            "reconnecting to the new master",
            self.url,
        )
        self._commands.drop(ConnectionError(f"the server was demoted to a replica: {reply}"))
        return True

    def _moved(self, reply: object, keys: list[bytes]) -> bool:
        """Whether ``reply`` says (``MOVED``) that this cluster node no longer serves the slot
        of ``keys``; if so, tell the owner."""
        if self._on_moved is None or not str(reply).startswith("MOVED"):
            return False
        self._on_moved(keys)
        return True

    def _reply_error(self, reply: hiredis.ReplyError) -> Exception:
        """What an awaited command answered with an error raises: PermissionDenied for NOPERM."""
        error = RedisCommandError(str(reply))
        if str(reply).startswith(("NOPERM", "NOAUTH", "WRONGPASS")):
            return self.broker_unavailable(error)
        return error

    async def _command(self, command: bytes) -> Any:
        """Write ``command`` and return its answer (``BrokerUnavailable`` for any failure)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._errors:
            self._commands.write(command)
            self._reply_waiters.append(waiter)
            return await waiter

    async def publish(self, subject: Subject, payload: bytes) -> None:
        try:  # not a `with self._errors` block: this is the hot path, and only this can fail
            self._commands.write(pack(self._publish_command, subject.name, payload))
        except ConnectionError as exc:  # not connected: reconnecting
            raise self._converted(exc) from exc
        self._reply_waiters.append(subject)
        if self._commands.congested:  # checked, not awaited, on the hot path
            await self._commands.wait_writable()

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        # The reply address travels in the envelope; PUBLISH's answer is the receiver count.
        return int(await self._command(pack(self._publish_command, subject.name, payload)))

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

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        pubsub = await self._pubsub_connection()
        key = subject.name.encode()
        is_pattern = subject.pattern
        (self._pattern_handlers if is_pattern else self._channel_handlers)[key] = on_message
        if not pubsub.connected:
            return  # re-issued by _resubscribe once the connection is back
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        command = b"PSUBSCRIBE" if is_pattern else self._subscribe_command
        self._pubsub_pending.append(_PubSubCommand(command, [key], [confirmed]))
        pubsub.write(pack(command, key))
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), _SUBSCRIBE_TIMEOUT)
        except asyncio.TimeoutError as exc:
            raise BrokerUnavailable(
                self.url, f"no confirmation of SUBSCRIBE {subject.name}"
            ) from exc

    async def unsubscribe(self, subject: Subject) -> None:
        key = subject.name.encode()
        is_pattern = subject.pattern
        handlers = self._pattern_handlers if is_pattern else self._channel_handlers
        if handlers.pop(key, None) is None or self._pubsub is None or not self._pubsub.connected:
            return
        command = b"PUNSUBSCRIBE" if is_pattern else self._unsubscribe_command
        self._pubsub_pending.append(_PubSubCommand(command, [key], []))
        self._pubsub.write(pack(command, key))

    def _on_pubsub_reply(self, reply: Any) -> None:
        if type(reply) is not list:  # an error reply: Redis refused a whole command
            self._pubsub_refused(reply)
            return
        kind = reply[0]
        if kind == b"pmessage":
            handler = self._pattern_handlers.get(reply[1])
            payload = reply[3]
        elif kind == b"message" or kind == b"smessage":
            handler = self._channel_handlers.get(reply[1])
            payload = reply[2]
        else:  # one subject of a (p)(s)(un)subscribe confirmed
            pending = self._pubsub_pending
            if kind == b"sunsubscribe" and self._unsolicited(reply[1]):
                return
            if pending:
                command = pending[0]
                command.due -= 1
                if command.due <= 0:
                    pending.popleft()
                    for confirmed in command.waiters:
                        if not confirmed.done():
                            confirmed.set_result(None)
                    if command.after is not None:
                        command.after()
            return
        if handler is not None:
            handler(payload)

    def _unsolicited(self, key: bytes) -> bool:
        """Whether an ``sunsubscribe`` for ``key`` is the server's own: the slot of a shard
        channel we still want moved to another node (resharding, a failover)."""
        pending = self._pubsub_pending
        if pending and pending[0].name == b"SUNSUBSCRIBE" and key in pending[0].keys:
            return False  # the confirmation of ours
        if self._channel_handlers.pop(key, None) is not None and self._on_moved is not None:
            self._on_moved([key])
        return True

    def _pubsub_refused(self, reply: Any) -> None:
        if not self._pubsub_pending:
            logger.error("Redis at %s sent an unexpected error on pub/sub: %s", self.url, reply)
            return
        command = self._pubsub_pending.popleft()
        if command.after is not None:
            command.after()
        if command.name == b"SSUBSCRIBE" and not command.waiters:  # re-issued, to a moved slot
            for key in command.keys:
                self._channel_handlers.pop(key, None)
            if self._moved(reply, command.keys):
                return
        error = self._reply_error(reply) if isinstance(reply, hiredis.ReplyError) else None
        if error is None:
            error = RedisCommandError(f"unexpected reply to {command.name.decode()}: {reply!r}")
        if command.name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
            # Not subscribed: forget the handlers, or every reconnect would be refused again.
            handlers = self._pattern_handlers if command.name == b"PSUBSCRIBE" else None
            handlers = self._channel_handlers if handlers is None else handlers
            for key in command.keys:
                handlers.pop(key, None)
        if command.waiters:
            for confirmed in command.waiters:
                if not confirmed.done():
                    confirmed.set_exception(error)
        else:
            subjects = b" ".join(command.keys).decode(errors="replace")
            logger.error(
                "%s (%s %s, re-issued after a reconnect: what they carry will not arrive)",
                error,
                command.name.decode(),
                subjects,
            )

    def _on_pubsub_lost(self, reason: BaseException) -> None:
        # Replies to what was written are lost with the connection; subscriptions still waiting
        # for their confirmation get it (or the refusal) when _resubscribe re-issues them.
        pending, self._pubsub_pending = self._pubsub_pending, deque()
        for command in pending:
            if command.name in (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE"):
                for key in command.keys:
                    self._unconfirmed.setdefault(key, []).extend(command.waiters)
        self._events.connection_lost(reason)

    async def _resubscribe(self) -> None:
        """Re-issue every subscription on the new pub/sub connection; the connection counts as
        restored once Redis confirmed them all, so that what is published from then on reaches
        them (history groups read what they missed at that moment)."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        commands = [
            (name, keys)
            for name, handlers in (
                (self._subscribe_command, self._channel_handlers),
                (b"PSUBSCRIBE", self._pattern_handlers),
            )
            for keys in self._batches(list(handlers))
        ]
        remaining = len(commands)

        def one_settled() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._events.connection_restored()

        for name, keys in commands:
            waiters = [waiter for key in keys for waiter in unconfirmed.pop(key, ())]
            self._pubsub_pending.append(_PubSubCommand(name, keys, waiters, one_settled))
            pubsub.write(pack(name, *keys))
        for waiters in unconfirmed.values():  # unsubscribed meanwhile: nothing to confirm
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if not commands:
            self._events.connection_restored()

    def _batches(self, keys: list[bytes]) -> list[list[bytes]]:
        """``keys`` as the subscribe commands that may carry them: all in one, or, for shard
        channels, one command per hash slot (several slots in one would be ``CROSSSLOT``)."""
        if not self._sharded:
            return [keys] if keys else []
        by_slot: dict[int, list[bytes]] = {}
        for key in keys:
            by_slot.setdefault(key_slot(key), []).append(key)
        return list(by_slot.values())

    # -- worker queues -------------------------------------------------------------------------

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        # A list cannot tell whether anyone reads it: asks to an unread worker channel time out.
        command = pack(
            b"EVAL", _PUSH_IF_ROOM, 1, queue.name, payload, capacity, max(1, int(ttl) + 1)
        )
        return bool(await self._command(command))

    def _blocking(self) -> Redis:
        """The redis-py client for blocking pops and flushes (its own connections; under
        Sentinel on the same sentinels as the rest, leaving a demoted master by itself)."""
        if self._blocking_client is None:
            self._blocking_client = Redis(connection_pool=self._pool.blocking_pool())
        return self._blocking_client

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        name = queue.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        failure: BaseException | None = None
        for attempt in range(3):
            failure = None
            try:
                popped = await self._blocking().brpop([name], timeout=timeout)
                break
            except REDIS_FAILURES as exc:
                failure = exc
            remaining = deadline - loop.time()
            if attempt == 2 or self._failovers is None or remaining < 0.1:
                break
            if isinstance(self.broker_unavailable(failure), PermissionDenied):
                break
            # A failover, likely. Retry at once (we may have left an old master for the new
            # one); then wait, within this pop's time, for the new master to be announced.
            if attempt == 1:
                async with self._pool.master_watch() as pause:
                    await pause(remaining)
            timeout = max(deadline - loop.time(), 0.1)
        if failure is not None:  # raised outside the handler: only _chainable decides the chain
            raise self._converted(failure)
        if popped is None:
            return None
        payload = popped[1]
        return payload if isinstance(payload, bytes) else payload.encode()

    # -- history -------------------------------------------------------------------------------

    keeps_history = True

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        name = subject.name
        args = redis_history.append_args(name, name, self._publish_command, payloads, limits, epoch)
        try:
            self._commands.write(pack(b"EVAL", redis_history.APPEND, *args))
        except ConnectionError as exc:  # not connected: reconnecting
            raise self._converted(exc) from exc
        self._reply_waiters.append(subject)  # answered as a PUBLISH is: refusals counted

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        args = redis_history.read_args(subject.name, since, limit, limits)
        return redis_history.read_slice(
            await self._command(pack(b"EVAL", redis_history.READ, *args))
        )

    # -- presence ------------------------------------------------------------------------------

    def registry(self) -> ProcessRegistry:
        return RedisRegistry(registry_key(self._prefix), self._eval, self._send_script)

    async def _send_script(self, script: str, key: str, *args: str | int) -> None:
        """Queue ``script`` on the command connection without waiting (it leaves on close)."""
        try:
            self._commands.write(pack(b"EVAL", script, 1, key, *args))
        except ConnectionError:
            return  # not connected: the entry expires on its own
        self._reply_waiters.append(None)  # an error reply is logged, not raised

    async def _eval(self, script: str, key: str, *args: str | int) -> Any:
        """Run ``script`` on ``key`` on the command connection; errors as BrokerUnavailable."""
        return await self._command(pack(b"EVAL", script, 1, key, *args))

    async def queue_flush(self, queues: Subject) -> None:
        client = self._blocking()
        with self._errors:
            keys = [key async for key in client.scan_iter(match=queues.name, count=1000)]
            for start in range(0, len(keys), 500):
                await client.unlink(*keys[start : start + 500])


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark ``future``'s outcome as seen (nobody awaits it any more)."""
    if not future.cancelled():
        future.exception()


class _PubSubCommand:
    """A command written on the pub/sub connection: one confirmation is due per subject.
    ``after`` (re-issued subscriptions) is called once it is confirmed or refused."""

    __slots__ = ("after", "due", "keys", "name", "waiters")

    def __init__(
        self,
        name: bytes,
        keys: list[bytes],
        waiters: list[asyncio.Future[None]],
        after: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.keys = keys
        self.due = len(keys)
        self.waiters = waiters
        self.after = after
