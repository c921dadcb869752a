"""A bounded FIFO of encoded messages for one channel in this process, and its waiting receivers.

Semantics:

* FIFO: messages come out in the order they were put in.
* Bounded: :meth:`Mailbox.put` refuses (returns ``False``) once ``capacity`` unexpired messages
  wait; expired ones are dropped first to make room. ``force=True`` bypasses the bound, for a
  message already taken off a broker queue that must not be lost.
* Expiry: a message not received before its deadline is dropped on the way out and reported
  through ``on_expired``.
* Cancellation-safe: a receiver cancelled while waiting takes nothing; if it had already been
  woken for a message, it wakes the next receiver instead, so no message is lost or duplicated.
* Bodies stay encoded here; each receiver decodes its own copy, so group members sharing one
  body never share mutable state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import monotonic


class Mailbox:
    __slots__ = ("_items", "_on_expired", "_waiters", "capacity", "last_active", "name")

    def __init__(self, name: str, capacity: int, on_expired: Callable[[str, int], None]) -> None:
        self.name = name
        self.capacity = capacity
        self._on_expired = on_expired
        self._items: deque[tuple[float, bytes]] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: When a receiver last waited on or took from this mailbox (monotonic seconds).
        self.last_active = monotonic()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def has_waiters(self) -> bool:
        """Whether a receiver is waiting that no message has been promised to yet."""
        return bool(self._waiters)

    def put(self, body: bytes, expires_at: float, *, force: bool = False) -> bool:
        if not force and len(self._items) >= self.capacity:
            self.drop_expired()
            if len(self._items) >= self.capacity:
                return False
        self._items.append((expires_at, body))
        if self._waiters:
            self._wake_one()
        return True

    def get_nowait(self) -> bytes | None:
        """The next unexpired message if one is waiting and no receiver is ahead, else ``None``."""
        items = self._items
        if not items or self._waiters:
            return None
        now = self.last_active = monotonic()
        while items:
            expires_at, body = items.popleft()
            if expires_at >= now:
                return body
            self._on_expired(self.name, 1)
        return None

    async def get(self) -> bytes:
        while True:
            self.last_active = monotonic()
            items = self._items
            while items:
                expires_at, body = items.popleft()
                if expires_at >= monotonic():
                    if items and self._waiters:
                        self._wake_one()
                    return body
                self._on_expired(self.name, 1)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were promised a message: pass the promise on
                elif waiter in self._waiters:  # a wake-up or close() may have taken it already
                    self._waiters.remove(waiter)
                raise

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def drop_expired(self) -> int:
        """Drop expired messages from the front; return how many messages remain."""
        items = self._items
        now = monotonic()
        dropped = 0
        while items and items[0][0] < now:
            items.popleft()
            dropped += 1
        if dropped:
            self._on_expired(self.name, dropped)
        return len(items)

    def fail_waiters(self, error: BaseException) -> None:
        """Wake every waiting receiver with ``error`` (the layer is closing)."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def clear(self) -> None:
        self._items.clear()
