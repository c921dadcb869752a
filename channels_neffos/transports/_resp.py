"""A Redis connection whose socket we drive ourselves: pipelined writes, a bulk ``hiredis`` reader.

redis-py opens the connection — URL parsing, TLS, AUTH/ACL, ``SELECT``, client name — and then
hands us its asyncio streams. From then on every command is written without waiting for the
previous reply (writes issued in the same event-loop turn leave in one ``send()``), and one reader
task parses replies in bulk with ``hiredis.Reader``. That is the difference between ~2k and
>100k PUBLISH/s from one Python process: redis-py's own command path waits for each reply under a
lock, and its pub/sub reader parses one message per await.

When the connection drops, :class:`RespConnection` reports it, fails nothing silently (the owner
decides what to do with replies it was waiting for), and reconnects with capped exponential
backoff, calling ``on_reconnected`` so the owner can re-issue its subscriptions. The owner can
also end a connection that still works but must not be used any more (:meth:`RespConnection.drop`,
for a master that Sentinel demoted to a replica): that takes the same path as a lost one.
Each attempt opens a new connection from the pool, so a pool that finds its server anew each
time (Sentinel's) moves to a new master by reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import AbstractConnection

logger = logging.getLogger("channels_neffos.redis")

#: Flush the coalesced write buffer early once it holds this many bytes.
_FLUSH_AT_BYTES = 64 * 1024
#: Make writers wait (back-pressure) while the socket buffer holds more than this.
_HIGH_WATER_BYTES = 4 * 1024 * 1024
_RECONNECT_FIRST_DELAY = 0.05
#: At most this long between attempts (less a random 20 %, so that many instances that lost one
#: server do not all come back in the same instant): a restarted broker is in use within ~1 s.
_RECONNECT_MAX_DELAY = 1.0

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


#: Sleep ``seconds`` between reconnect attempts, or less if an attempt now would succeed.
Pause = Callable[[float], Awaitable[None]]


class Failovers(Protocol):
    """What a source that follows a master through failovers (Sentinel) tells its users."""

    def follow(self, on_switch: Callable[[str, int], None]) -> None:
        """Call ``on_switch(host, port)`` whenever a new master is announced."""

    async def unfollow(self, on_switch: Callable[[str, int], None]) -> None: ...


class ConnectionSource(Protocol):
    """Where a Redis transport's connections come from: one server, several cluster seeds, or
    the master the sentinels name.

    Capabilities, so that no user of a source asks what kind it is:

    * ``failovers`` — ``None`` for a server that never moves; for a Sentinel master, where to
      hear of a new one (:class:`Failovers`).
    * ``master_watch()`` — an async context manager held while reconnecting, giving
      ``pause(seconds)`` to wait between attempts: a plain sleep, or one that returns early when
      a new master is announced.
    * ``blocking_pool()`` — a redis-py pool of its own, to the same server(s), for blocking
      commands (``BRPOP``) that must not hold up the pipelined connections. Under Sentinel it
      follows new masters by itself (it drops its connections on an announcement).
    """

    @property
    def failovers(self) -> Failovers | None: ...

    def make_connection(self) -> AbstractConnection: ...

    async def disconnect(self) -> None: ...

    def master_watch(self) -> AbstractAsyncContextManager[Pause]: ...

    def blocking_pool(self) -> Any: ...


async def open_streams(pool: ConnectionSource) -> StreamPair:
    """Let redis-py connect and handshake, then take its streams away from it.

    We detach the streams from redis-py's connection object so that its finaliser does not
    close a socket that is now ours. This reads two private attributes (stable since redis-py
    4.2); if a future release renames them, we fail loudly here rather than misbehave later.
    """
    connection = pool.make_connection()
    await connection.connect()
    # A server that wants a password answers the handshake's commands only with errors, and
    # redis-py sends none without one: ask once, so that a missing password fails here, named
    # (AuthenticationError), instead of as garbage replies on every reconnect.
    try:
        await connection.send_command("PING")
        await connection.read_response()
    except BaseException:
        await connection.disconnect()
        raise
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if not isinstance(reader, asyncio.StreamReader) or not isinstance(writer, asyncio.StreamWriter):
        await connection.disconnect()
        raise RuntimeError(
            "this redis-py version does not expose its connection streams; "
            "channels_neffos needs redis-py >= 5 (please report the version you use)"
        )
    connection._reader = connection._writer = None
    return reader, writer


class RespConnection:
    """One RESP2 connection: ``write()`` commands, replies go to ``on_reply`` in order."""

    def __init__(
        self,
        pool: ConnectionSource,
        url: str,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[BaseException], None],
        on_reconnected: Callable[[], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self.url = url
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._on_reconnected = on_reconnected
        self._writer: asyncio.StreamWriter | None = None
        self._stream: asyncio.StreamReader | None = None
        self._parser = hiredis.Reader()
        self._reader_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._yield_due = False
        self._closed = False
        # Why the owner ended this connection (drop()), reported instead of the EOF it causes.
        self._drop_reason: BaseException | None = None
        #: The (host, port) of the server this connection reached last (None: a unix socket).
        self.peer: tuple[str, int] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def reading(self) -> bool:
        """Whether replies are being read now, by a reader of the running event loop (a
        connection of a loop that has ended reads nothing any more)."""
        task = self._reader_task
        if task is None or task.done() or self._writer is None:
            return False
        try:
            return task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            return False

    @property
    def reconnecting(self) -> bool:
        return self._reconnect_task is not None and not self._reconnect_task.done()

    async def connect(self) -> None:
        reader, writer = await open_streams(self._pool)
        self._writer = writer
        self._stream = reader
        self._parser = hiredis.Reader()
        self._drop_reason = None
        peer = writer.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._start_reading(reader)

    def _start_reading(self, reader: asyncio.StreamReader) -> None:
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_replies(reader, self._parser),
            name=f"channels_neffos redis reader {self.url}",
        )

    def resume_reading(self) -> bool:
        """Read replies again after the reader was cancelled with every other task of its loop
        — ``asyncio.run`` and ``async_to_sync`` do that before they close a loop — so that the
        replies to what was written can still be read on close. Whether replies are read now.

        The stream and the parser (with any half-read reply) are the reader's own, so a new
        reader goes on exactly where the cancelled one stopped."""
        if self.reading:
            return True
        task, stream = self._reader_task, self._stream
        if task is None or stream is None or self._writer is None or not task.cancelled():
            return False  # never read, or ended by a failure: the connection is lost
        try:
            if task.get_loop() is not asyncio.get_running_loop():
                return False
        except RuntimeError:
            return False
        self._start_reading(stream)
        return True

    def write(self, command: bytes) -> None:
        """Queue one packed command; it leaves at the end of this event-loop turn at the latest."""
        if self._writer is None:
            raise ConnectionError(f"not connected to Redis at {self.url}")
        self._out.append(command)
        self._out_bytes += len(command)
        if self._out_bytes >= _FLUSH_AT_BYTES:
            self._flush()
            self._yield_due = True  # a whole batch left without the event loop getting a turn
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def congested(self) -> bool:
        """Whether a writer should call :meth:`wait_writable` before writing more."""
        if self._yield_due:
            return True
        writer = self._writer
        return writer is not None and writer.transport.get_write_buffer_size() > _HIGH_WATER_BYTES

    async def wait_writable(self) -> None:
        """Back-pressure: give the event loop a turn after every batch, so readers (ours, and
        Redis draining its output to subscribers) keep up with a publisher that never awaits
        anything else; and wait while the kernel and asyncio buffers are too full."""
        if self._yield_due:
            self._yield_due = False
            await asyncio.sleep(0)
        writer = self._writer
        if writer is not None and writer.transport.get_write_buffer_size() > _HIGH_WATER_BYTES:
            await writer.drain()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        if self._writer is not None:
            self._writer.write(data)

    async def _read_replies(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        on_reply = self._on_reply
        try:
            while True:
                data = await reader.read(262144)
                if not data:
                    raise ConnectionError("connection closed by the server")
                parser.feed(data)
                reply = parser.gets()
                while reply is not False:
                    on_reply(reply)
                    reply = parser.gets()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the socket or the parser ends this connection
            self._connection_lost(self._drop_reason or exc)

    def drop(self, reason: BaseException) -> None:
        """End this connection now, as if the server had closed it, and reconnect.

        For a server that still answers but must not be used any more. Writes fail from now on
        (``ConnectionError``); replies already received are still delivered, then ``on_lost``
        is called with ``reason``, as for a lost connection.
        """
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._drop_reason = reason
        self._out.clear()
        self._out_bytes = 0
        writer.transport.abort()  # the reader sees the end of the stream, then _connection_lost

    def _connection_lost(self, reason: BaseException) -> None:
        writer, self._writer = self._writer, None
        self._out.clear()
        self._out_bytes = 0
        if writer is not None:
            writer.close()
        if self._closed:
            return
        logger.warning("lost connection to Redis at %s: %s; reconnecting", self.url, reason)
        self._on_lost(reason)
        # Dropped by the owner (a new master is known): the first attempt need not wait.
        at_once = self._drop_reason is not None
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(at_once))

    async def _reconnect(self, at_once: bool = False) -> None:
        async with self._pool.master_watch() as pause:
            delay = _RECONNECT_FIRST_DELAY
            attempts = 0
            while not self._closed:
                if attempts or not at_once:
                    await pause(delay * random.uniform(0.8, 1.0))
                attempts += 1
                try:
                    await self.connect()
                except Exception as exc:  # refused, timed out, auth error...: keep trying, say why
                    log = logger.warning if attempts == 1 else logger.debug
                    log("reconnecting to Redis at %s failed (will keep trying): %s", self.url, exc)
                    delay = min(delay * 2, _RECONNECT_MAX_DELAY)
                    continue
                logger.warning("reconnected to Redis at %s after %d attempt(s)", self.url, attempts)
                await self._on_reconnected()  # re-subscribe before anything else
                return

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._reader_task, self._reconnect_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            self._flush_pending_into(writer)
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass

    def _flush_pending_into(self, writer: asyncio.StreamWriter) -> None:
        if self._out:
            writer.write(b"".join(self._out))
            self._out.clear()


def pack(*args: bytes | str | int | float) -> bytes:
    packed: bytes = hiredis.pack_command(args)
    return packed
