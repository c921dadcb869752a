"""One WebSocket's outgoing frames: a bounded buffer and the one task that writes it.

Everything the server writes to a neffos client — its own answers, broadcasts fanned out by the
process's :mod:`hub <.hub>`, ``send_to`` frames, the close — goes through the connection's
:class:`Outgoing`, so:

* **Order.** Frames reach the client in the order they were pushed; a close queued with
  :meth:`Outgoing.close` goes after every frame pushed before it.
* **Nobody waits for a slow client.** :meth:`Outgoing.push` never awaits; one writer task per
  connection awaits the ASGI server's ``send``. A client that reads slowly delays only itself.
* **Bounded.** At most ``max_frames`` frames and ``max_bytes`` bytes wait here (a text frame
  counts its length in characters). A push beyond either bound means the client cannot keep up:
  what waited is dropped, the connection is closed with :data:`CLOSE_SLOW_CLIENT` (4013, "try
  again later"; daphne accepts no close code but 1000 and 3000-4999), and the close is counted in
  ``channels_neffos.namespaces.counters["slow_client_closed"]`` and logged, at most one line per
  10 seconds.

What "waiting here" means depends on the server, because ASGI has no back-pressure signal:

* uvicorn's ``send`` waits while the socket's buffer is above its high-water mark, so the frames
  a slow client has not read wait in this buffer.
  uvicorn takes the close frame only once the client reads again, so if it has not taken it
  within :data:`CLOSE_TIMEOUT` seconds the connection is aborted (the client sees 1006).
* daphne's ``send`` returns at once and Twisted buffers without bound. Where the ASGI ``send``
  leads to daphne's protocol (directly, or through Channels' session middleware), this module
  registers a Twisted push producer on its socket, so the writer pauses while Twisted holds more
  than its 64 KiB buffer and the frames wait here instead. Behind other ``send`` wrappers it
  cannot pause, and daphne's own buffer is unbounded, as it is for every daphne application.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from .._drops import RateLimitedLog

logger = logging.getLogger("channels_neffos.namespaces")

#: What namespaces counted in this process: ``slow_client_closed`` (see below), ``refused_busy``
#: (:mod:`.admission`), ``not_a_frame``
#: (see :mod:`.hub`).
counters: Counter[str] = Counter()
_slow_clients = RateLimitedLog(logger, logging.WARNING)

#: The close code for a client that could not keep up (like 1013 "try again later", in the
#: 4000-4999 range that every ASGI server accepts).
CLOSE_SLOW_CLIENT = 4013
#: How long the close frame for a slow client may wait for the server to take it.
CLOSE_TIMEOUT = 5.0

Frame = str | bytes
AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]


class State(enum.Enum):
    OPEN = "open"  #: frames are taken
    CLOSING = "closing"  #: a close waits behind the pending frames; no new frames are taken
    CLOSED = "closed"  #: the close was handed to the server, or the socket is gone


class Outgoing:
    """The write side of one WebSocket (see the module docstring)."""

    def __init__(self, send: AsgiSend, name: str, *, max_frames: int, max_bytes: int) -> None:
        self.name = name
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.state = State.OPEN
        self._send = send
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._close_message: dict[str, Any] = {}
        self._wakeup: asyncio.Future[None] | None = None
        self._writable = _daphne_flow_control(send)
        self._writer: asyncio.Task[None] | None = asyncio.ensure_future(self._write())
        self._closer: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> tuple[int, int]:
        """``(frames, bytes)`` waiting to be written."""
        return len(self._frames), self._bytes

    def push(self, frame: Frame) -> bool:
        """Queue ``frame``; ``False`` if the connection is closing or was just closed as slow."""
        if self.state is not State.OPEN:
            return False
        size = len(frame)
        if len(self._frames) >= self.max_frames or self._bytes + size > self.max_bytes:
            self._close_slow_client()
            return False
        self._frames.append(frame)
        self._bytes += size
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        return True

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close after the frames already pushed have been written."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self._close_message = {"type": "websocket.close"}
        if code is not None:
            self._close_message["code"] = code
        if reason:
            self._close_message["reason"] = reason
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)

    async def discard(self) -> None:
        """The socket is gone: drop what waits and stop writing (awaits the writer's end)."""
        self.state = State.CLOSED
        self._frames.clear()
        self._bytes = 0
        tasks = [task for task in (self._writer, self._closer) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close_slow_client(self) -> None:
        waiting = len(self._frames)
        self.state = State.CLOSED
        self._frames.clear()
        self._bytes = 0
        counters["slow_client_closed"] += 1
        _slow_clients(
            "slow",
            "%d slow client(s) closed with code %d: they did not read fast enough (latest: %s, "
            "%d frames waiting); see NeffosConsumer.max_buffered_frames/max_buffered_bytes",
            CLOSE_SLOW_CLIENT,
            self.name,
            waiting,
        )
        if self._writer is not None:
            self._writer.cancel()  # it may wait on a send that waits for the client
        self._closer = asyncio.ensure_future(self._send_close(CLOSE_SLOW_CLIENT))

    async def _send_close(self, code: int) -> None:
        close = {"type": "websocket.close", "code": code}
        try:
            await asyncio.wait_for(self._send(close), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            # uvicorn takes a close only once the client reads again: drop the connection
            # instead, or it would stay open (and in its rooms) for as long as the client lives.
            if not _abort(self._send):
                logger.warning("slow client %s: the server took no close frame", self.name)
        except Exception as exc:  # the socket is gone already
            logger.debug("closing slow client %s: %r", self.name, exc)

    async def _write(self) -> None:
        frames = self._frames
        send = self._send
        writable = self._writable
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not frames:
                    if self.state is not State.OPEN:
                        break
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    continue
                if writable is not None and not writable.is_set():
                    await writable.wait()
                    continue  # the connection may have been closed meanwhile
                frame = frames.popleft()
                self._bytes -= len(frame)
                if type(frame) is str:
                    await send({"type": "websocket.send", "text": frame})
                else:
                    await send({"type": "websocket.send", "bytes": frame})
            if self.state is State.CLOSING:
                self.state = State.CLOSED
                await send(self._close_message)
        except Exception as exc:  # the server refuses to send: the socket is gone
            logger.debug("writing to %s stopped: %r", self.name, exc)
            self.state = State.CLOSED
            frames.clear()
            self._bytes = 0


# -- reaching the server behind the ASGI send ------------------------------------------------


def _server_protocol(send: Any) -> Any:
    """The ASGI server's protocol object for this connection, or ``None``.

    daphne passes ``functools.partial(server.handle_reply, protocol)``; uvicorn passes its
    protocol's bound ``send``; Channels' session middleware wraps either in a bound method of
    an object that keeps the original as ``real_send``.
    """
    for _ in range(8):
        if isinstance(send, functools.partial):
            if getattr(send.func, "__name__", "") == "handle_reply" and send.args:
                return send.args[0]
            return None
        owner = getattr(send, "__self__", None)
        inner = getattr(owner, "real_send", None)
        if inner is None:
            return owner if hasattr(owner, "transport") else None
        send = inner
    return None


def _abort(send: AsgiSend) -> bool:
    """Drop the connection under ``send`` at once (asyncio or Twisted transport), if we can."""
    transport = getattr(_server_protocol(send), "transport", None)
    for method in ("abort", "abortConnection"):
        abort = getattr(transport, method, None)
        if callable(abort):
            abort()
            return True
    return False


class _PauseWhileBuffered:
    """A Twisted push producer that tells the writer when to pause.

    It takes the place of the producer already on the socket (daphne leaves Twisted's
    ``HTTPChannel`` there when it upgrades a connection) and passes every call on to it, so that
    what that producer did — stop reading from a client that does not read — still happens.
    """

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # Twisted's names (IPushProducer)
        self.writable.clear()
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:
        self.writable.set()
        if self.previous is not None:
            self.previous.resumeProducing()

    def stopProducing(self) -> None:  # the connection is gone: stop waiting
        self.writable.set()
        if self.previous is not None:
            self.previous.stopProducing()


def _daphne_flow_control(send: AsgiSend) -> asyncio.Event | None:
    """An event that is clear while Twisted's buffer for this socket is full (daphne only)."""
    transport: Any = getattr(_server_protocol(send), "transport", None)
    if not callable(getattr(transport, "registerProducer", None)):
        return None  # not Twisted: uvicorn's send waits by itself
    try:
        previous = getattr(transport, "producer", None)
        if previous is not None:
            transport.unregisterProducer()
        producer = _PauseWhileBuffered(previous)
        transport.registerProducer(producer, True)
    except Exception as exc:  # a transport that is not what we expect: no pausing
        logger.warning("cannot watch daphne's write buffer of a connection: %r", exc)
        return None
    return producer.writable
