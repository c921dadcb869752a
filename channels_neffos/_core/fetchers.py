"""Worker channels: pulling their messages from the broker's queue while someone receives.

A worker channel (a name without ``!``) is a queue on the broker; each message goes to exactly
one reader in the whole system. A process reads it with one *fetcher* per channel, a task that
runs only while receivers wait on the channel's mailbox:

* **One at a time.** The fetcher pops one message per round trip and only while a receiver
  waits, so other processes' readers can take the rest; it ends when nobody waits any more
  (within :data:`QUEUE_POP_TIMEOUT`, the longest a pop blocks).
* **Nothing popped is refused.** A popped message is already off the broker's queue: it goes
  into the mailbox even if that is full.
* **Expiry holds across the queue.** A message carries its send time; one older than ``expiry``
  when popped is dropped and counted as ``expired``.
* **Failures.** A refusal (``PermissionDenied``) fails the waiting receivers at once — retrying
  cannot help; a broker outage is logged and retried every :data:`QUEUE_POP_TIMEOUT` seconds.
  Garbage is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from time import monotonic

from .. import envelope
from .._aio import log_failure
from ..exceptions import BrokerUnavailable, PermissionDenied
from .mailboxes import Drop, Mailbox

logger = logging.getLogger("channels_neffos")

#: How long a fetcher blocks on the broker per attempt; bounds how long it outlives its last
#: receiver.
QUEUE_POP_TIMEOUT = 1.0

#: ``pop(channel, timeout)``: one payload from the channel's queue, or ``None`` after ``timeout``.
Pop = Callable[[str, float], Awaitable[bytes | None]]


class WorkerFetchers:
    """The fetchers of one router, by worker channel."""

    __slots__ = ("_closed", "_drop", "_expiry", "_pop", "_tasks", "received")

    def __init__(self, pop: Pop, expiry: float, drop: Drop) -> None:
        self._pop = pop
        self._expiry = expiry
        self._drop = drop
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        #: Messages taken from the broker's queues (for stats).
        self.received = 0

    def ensure(self, channel: str, mailbox: Mailbox) -> None:
        """Have a fetcher fill ``mailbox`` while receivers wait on it."""
        running = self._tasks.get(channel)
        if (running is None or running.done()) and not self._closed:
            task = asyncio.ensure_future(self._fetch(channel, mailbox))
            self._tasks[channel] = task
            task.add_done_callback(lambda done: self._finished(channel, done))

    def _finished(self, channel: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(channel) is task:
            del self._tasks[channel]
        log_failure(logger, f"receiving from worker channel {channel}", task)

    async def _fetch(self, channel: str, mailbox: Mailbox) -> None:
        """Pull one message at a time while receivers wait, so others can take the rest."""
        await asyncio.sleep(0)  # let the receiver that started us register as a waiter
        while mailbox.has_waiters and not self._closed:
            try:
                payload = await self._pop(channel, QUEUE_POP_TIMEOUT)
            except PermissionDenied as exc:
                mailbox.fail_waiters(exc)  # retrying cannot help: the receivers must know
                return
            except BrokerUnavailable as exc:
                logger.warning("cannot receive from worker channel %s: %s", channel, exc)
                await asyncio.sleep(QUEUE_POP_TIMEOUT)
                continue
            if payload is not None:
                self.take(channel, mailbox, payload)

    def take(self, channel: str, mailbox: Mailbox, payload: bytes) -> None:
        """Put one popped payload into ``mailbox``, if it is a live message."""
        try:
            message = envelope.decode(payload)
        except ValueError as exc:
            self._drop("garbage", str(exc), 1)
            return
        self.received += 1
        age = time.time() - (message.sent_at or time.time())
        remaining = self._expiry - age
        if remaining < 0:
            self._drop("expired", channel, 1)
            return
        # Already taken off the broker queue: it must not be refused for capacity.
        mailbox.put(message.body, monotonic() + remaining, force=True)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
