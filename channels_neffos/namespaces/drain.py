"""Draining an instance on deploy: on SIGTERM, close the clients over a window, then exit.

Under daphne or uvicorn, the first :class:`~.consumer.NeffosConsumer` of a process installs a
SIGTERM handler (in the main thread, chained to the server's own). On SIGTERM the instance:

1. refuses new WebSocket connections (the handshake is answered 403 before any channel or
   task is made: a balancer or the client helper tries another instance);
2. closes each of its neffos clients with :data:`CLOSE_DRAINING` (4012, like 1012 "service
   restart"; daphne accepts only 1000 and 3000-4999), after the frames already queued for it —
   at moments spread evenly over ``NEFFOS_DRAIN_WINDOW`` seconds, so its clients do not all
   reconnect elsewhere at once;
3. waits until every consumer has ended (the closed ones, and any still being refused): each
   leaves its rooms and namespaces (so its groups and presence) as on any close;
4. closes the channel layers of the process, which writes what they had queued (broadcasts,
   history appends);
5. hands the signal to the server's own handler, which stops it; the process exits by itself,
   with nothing pending and nothing logged above INFO.

The whole drain is bounded by ``NEFFOS_DRAIN_TIMEOUT`` seconds: clients that have not closed by
then (a peer that never answers the close) are left to the server's shutdown, and that is
logged. A second SIGTERM during the drain stops the server at once. ``NEFFOS_DRAIN = False``
installs nothing (the server's own SIGTERM handling, which cuts the clients). SIGINT (Ctrl-C) is
left to the server. ``manage.py neffos drain --pid PID`` sends the signal and waits for the exit.

Django settings (all optional): ``NEFFOS_DRAIN`` (default ``True``), ``NEFFOS_DRAIN_WINDOW``
(default 5 s), ``NEFFOS_DRAIN_TIMEOUT`` (default 30 s; at least the window).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Protocol

from channels.layers import channel_layers
from django.conf import settings

logger = logging.getLogger("channels_neffos.namespaces")

#: The close code of a client closed because its instance drains (as 1012 "service restart").
CLOSE_DRAINING = 4012
DEFAULT_WINDOW = 5.0
DEFAULT_TIMEOUT = 30.0


class Drainable(Protocol):
    """A connection the drain can close (a ``NeffosConsumer``)."""

    def _close_for_drain(self) -> None: ...


def _setting(name: str, default: float) -> float:
    value = getattr(settings, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"settings.{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class Drain:
    """The process's drain: the open connections, and what SIGTERM does with them."""

    def __init__(self) -> None:
        self.connections: set[Drainable] = set()
        self.draining = False
        self._installed = False
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emptied: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- connections ---------------------------------------------------------------------------

    def opened(self, connection: Drainable) -> None:
        """``connection`` (a consumer, from its start to its end, accepted or not) is alive;
        installs the SIGTERM handler with the first one."""
        if not self._installed:
            self._install()
        self.connections.add(connection)

    def closed(self, connection: Drainable) -> None:
        self.connections.discard(connection)
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    # -- the signal ----------------------------------------------------------------------------

    def _install(self) -> None:
        self._installed = True  # once per process, whether or not it can be installed
        if not getattr(settings, "NEFFOS_DRAIN", True):
            return
        if threading.current_thread() is not threading.main_thread():
            logger.info("no drain on SIGTERM: the event loop does not run in the main thread")
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread, between two bytecodes of the event loop: only schedule.
        if self.draining or self._loop is None or self._loop.is_closed():
            self._hand_over(signum, frame)  # a second SIGTERM: stop now
            return
        self.draining = True
        self._loop.call_soon_threadsafe(self._start, signum, frame)

    def _start(self, signum: int, frame: FrameType | None) -> None:
        self._task = asyncio.ensure_future(self._drain(signum, frame))

    async def _drain(self, signum: int, frame: FrameType | None) -> None:
        try:
            window = _setting("NEFFOS_DRAIN_WINDOW", DEFAULT_WINDOW)
            timeout = max(window, _setting("NEFFOS_DRAIN_TIMEOUT", DEFAULT_TIMEOUT))
        except ValueError as exc:
            logger.warning("draining with the defaults: %s", exc)
            window, timeout = DEFAULT_WINDOW, DEFAULT_TIMEOUT
        connections = list(self.connections)
        logger.info(
            "SIGTERM: draining %d WebSocket connection(s) over %.1f s (close code %d)",
            len(connections),
            window,
            CLOSE_DRAINING,
        )
        loop = asyncio.get_running_loop()
        self._emptied = asyncio.Event()
        if not self.connections:
            self._emptied.set()
        timers = [
            loop.call_later(window * index / len(connections), connection._close_for_drain)
            for index, connection in enumerate(connections)
        ]
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout)
        except asyncio.TimeoutError:
            logger.info(
                "drain: %d connection(s) still open after %.1f s; the server closes them",
                len(self.connections),
                timeout,
            )
        finally:
            for timer in timers:
                timer.cancel()
        await _close_layers()
        logger.info("drained; stopping the server")
        self._hand_over(signum, frame)

    def _hand_over(self, signum: int, frame: FrameType | None) -> None:
        """The server's own SIGTERM handling: it stops the server."""
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            logger.info("SIGTERM was ignored before the drain was installed; not exiting")
        else:  # the default action: terminate
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


async def _close_layers() -> None:
    """Close this process's channel layers: what they queued is written first."""
    for alias, layer in list(channel_layers.backends.items()):
        close = getattr(layer, "close", None)
        if close is None or not inspect.iscoroutinefunction(close):
            continue
        try:
            await asyncio.wait_for(close(), 10)
        except Exception as exc:  # a broker that is down: its queue is lost, as the log says
            logger.warning("drain: closing channel layer %r failed: %r", alias, exc)


#: The drain of this process.
drain = Drain()
