"""Local delivery: each channel of this process has a bounded mailbox, and its waiting receivers.

A :class:`Mailbox` is one channel's FIFO of encoded messages; :class:`Mailboxes` is a router's
set of them (every process channel it made, every worker channel it reads). Semantics:

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
* A message that finds its mailbox full is dropped and counted (``channel_full``), or refused
  with ``ChannelFull`` where the sender is in this process and can be told.
* Dead channels are forgotten: Channels never says a consumer is gone, so a mailbox nobody has
  waited on for ``expiry`` seconds and that holds nothing unexpired is removed
  (:meth:`Mailboxes.sweep`); its group memberships go with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from time import monotonic

from channels.exceptions import ChannelFull

#: Called with (reason, where, count) for each message dropped (see channels_neffos._drops).
Drop = Callable[[str, str, int], None]


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


class Mailboxes(dict[str, Mailbox]):
    """The mailboxes of one router: a dict of channel name -> :class:`Mailbox` (a dict, so that
    the hot paths look one up at C speed), with the ways to fill them."""

    __slots__ = ("_capacity_for", "_drop", "_expiry")

    def __init__(self, capacity_for: Callable[[str], int], expiry: float, drop: Drop) -> None:
        super().__init__()
        self._capacity_for = capacity_for
        self._expiry = expiry
        self._drop = drop

    def all(self) -> list[Mailbox]:
        """Every mailbox (a copy: safe to read from another thread)."""
        return list(self.values())

    def open(self, channel: str, capacity: int | None = None) -> Mailbox:
        """``channel``'s mailbox, made on first use with ``capacity`` (default: the layer's
        ``capacity``/``channel_capacity`` for that name)."""
        mailbox = self.get(channel)
        if mailbox is None:
            if capacity is None:
                capacity = self._capacity_for(channel)
            mailbox = self[channel] = Mailbox(channel, capacity, self._expired)
        return mailbox

    def close(self, channel: str) -> None:
        self.pop(channel, None)

    def _expired(self, channel: str, count: int) -> None:
        self._drop("expired", channel, count)

    def expires_at(self) -> float:
        """The deadline of a message delivered now."""
        return monotonic() + self._expiry

    def deliver(self, channel: str, body: bytes, *, raise_full: bool = False) -> bool:
        """Put ``body`` in ``channel``'s mailbox (made if needed); ``False`` (counted) or
        ``ChannelFull`` (``raise_full``) if it is full."""
        mailbox = self.get(channel)
        if mailbox is None:  # ``is None``: an empty Mailbox is falsy (it has a length)
            mailbox = self.open(channel)
        if mailbox.put(body, monotonic() + self._expiry):
            return True
        if raise_full:
            raise ChannelFull(channel)
        self._drop("channel_full", channel, 1)
        return False

    def deliver_many(self, channels: Iterable[str], body: bytes, exclude: str | None = None) -> int:
        """Put one ``body`` in the mailbox of each of ``channels`` but ``exclude``; how many it
        was meant for (a full one drops it, counted)."""
        expires_at = monotonic() + self._expiry
        delivered = 0
        for channel in channels:
            if channel == exclude:
                continue
            mailbox = self.get(channel)
            if mailbox is None:
                mailbox = self.open(channel)
            if not mailbox.put(body, expires_at):
                self._drop("channel_full", channel, 1)
            delivered += 1
        return delivered

    def sweep(self, now: float) -> list[str]:
        """Forget the channels nobody has received from for ``expiry`` and whose messages have
        expired; return their names (their group memberships must go too)."""
        idle_before = now - self._expiry
        dead = []
        for channel, mailbox in list(self.items()):
            if mailbox.has_waiters or mailbox.last_active > idle_before:
                continue
            if mailbox.drop_expired() == 0:
                del self[channel]
                dead.append(channel)
        return dead

    def clear_messages(self) -> None:
        """Empty every mailbox; forget those nobody waits on (``flush``)."""
        for channel, mailbox in list(self.items()):
            mailbox.clear()
            if not mailbox.has_waiters:  # a waiting receiver keeps its (now empty) mailbox
                del self[channel]

    def fail_waiters(self, error: Callable[[str], BaseException]) -> None:
        """Wake every waiting receiver with ``error(channel)`` (the router is closing)."""
        for channel, mailbox in self.items():
            mailbox.fail_waiters(error(channel))
