"""History groups: positions assigned by the broker, one order per group, no silent gap.

A group that matches the layer's ``history`` option (``{glob or regex: {"size": N, "ttl": s}}``,
first match wins) is a *history group*. What changes for it:

* **Sending** (:mod:`.history_writer`). ``group_send`` hands the message to the writer and
  returns; at the end of that turn of the event loop the writer appends what each group was
  sent, in send order, as one batch (one atomic step on the broker gives the messages the
  group's next offsets, stores them and publishes them). Nothing is delivered locally first:
  the process's own members get the message from the broker like every other process's, so
  that they too see the group's one order. While the connection is down the writer keeps what
  it could not append (bounded in count and time) and appends it once the connection is back;
  what it gives up is counted (``history_unwritten``), as the transport counts a batch the
  broker refuses or whose answer never came (``refused``, ``moved``, ``unconfirmed``) — at the
  sender; a message that never got an offset leaves no hole at any receiver.
* **Receiving.** :class:`Sequencer` keeps, per history group with members here, the epoch and the
  last offset delivered — starting from the group's position read just before this process
  subscribed it, so that every message sent after ``group_add`` returned reaches the member,
  even one the new subscription missed — and delivers each message with
  ``"__position__": {"epoch", "offset"}`` in offset order. A message past the next offset (a
  batch lost on this process's connection, a reconnect) is held while the missing ones are
  read from history; they are delivered first. If history no longer has them — or the epoch
  changed, which means the broker lost the group's history — the next message delivered
  carries ``"gap": True`` in its position and the loss is counted (``history_gap``), never
  silent; a new epoch is delivered from its first offset on (every message of it came after
  the old epoch's end), from history if this process missed its start. A message already
  delivered (an offset at or below the last, with the same payload) is dropped; another payload
  under such an offset means the broker's history was rewritten (a Redis failover to a replica
  that lacked the last appends): delivered, marked and counted the same way. After a reconnect
  every history group is read from its last offset, so a loss at the end of a burst is found
  without waiting for the next message.
* **Reading.** :func:`recovered` decides whether a read of history since a position is complete.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import envelope
from ..exceptions import BrokerUnavailable
from ..transports.base import HistoryLimits, HistorySlice, unpack_positioned
from .mailboxes import Drop

logger = logging.getLogger("channels_neffos")

#: How long a group's position outlives its last message unless ``meta_ttl`` says otherwise.
DEFAULT_META_TTL = 7 * 24 * 3600.0
#: Messages a receiver holds while it reads the ones before them from history.
MAX_HELD = 10_000
#: Seconds a receiver keeps trying to read a hole from history while the broker is unreachable.
READ_PATIENCE = 10.0
#: Offsets delivered whose payload a receiver remembers (a checksum each).
REMEMBERED = 4096

HistoryRules = tuple[tuple[re.Pattern[str], HistoryLimits], ...]


def compile_history(option: Any) -> HistoryRules:
    """The ``history`` option as (pattern, limits) pairs; ``TypeError``/``ValueError`` saying
    what to fix."""
    if option is None:
        return ()
    if not isinstance(option, dict):
        raise TypeError(
            'history must be a dict of {glob or regex: {"size": messages, "ttl": seconds}}, '
            f"got {type(option).__name__}"
        )
    rules = []
    for pattern, limits in option.items():
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, str):
            compiled = re.compile(fnmatch.translate(pattern))
        else:
            raise TypeError(f"history: {pattern!r} is neither a glob (str) nor a compiled regex")
        rules.append((compiled, _limits(pattern, limits)))
    return tuple(rules)


def _limits(pattern: Any, limits: Any) -> HistoryLimits:
    where = f"history[{pattern!r}]"
    if not isinstance(limits, dict):
        raise TypeError(f'{where} must be a dict like {{"size": 100, "ttl": 300}}')
    unknown = set(limits) - {"size", "ttl", "meta_ttl"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (use size, ttl, meta_ttl)")
    size, ttl = limits.get("size"), limits.get("ttl")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{where}['size'] must be a positive int (messages kept), got {size!r}")
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
        raise ValueError(f"{where}['ttl'] must be a positive number of seconds, got {ttl!r}")
    meta_ttl = limits.get("meta_ttl", max(float(ttl), DEFAULT_META_TTL))
    if not isinstance(meta_ttl, (int, float)) or isinstance(meta_ttl, bool) or meta_ttl < ttl:
        raise ValueError(
            f"{where}['meta_ttl'] must be a number of seconds >= ttl, got {meta_ttl!r}"
        )
    return HistoryLimits(size, float(ttl), float(meta_ttl))


def history_for(rules: HistoryRules, group: str) -> HistoryLimits | None:
    """The limits of ``group``'s history (the first rule that matches it), or ``None``."""
    for pattern, limits in rules:
        if pattern.match(group):
            return limits
    return None


@dataclass(frozen=True)
class GroupHistory:
    """What :meth:`~channels_neffos.NeffosChannelLayer.group_history` returns."""

    #: The group's epoch now; ``None`` if the broker holds no history for it.
    epoch: str | None
    #: The offset of the group's latest message (0: none yet).
    offset: int
    #: The messages read, oldest first, each with its ``"__position__"``.
    messages: list[dict[str, Any]]
    #: With ``since``: whether ``messages`` are *all* the messages after it, with nothing
    #: missing between (up to ``limit``: compare the last one's offset with :attr:`offset`).
    #: ``False`` when ``since`` is of another epoch or older than what is kept.
    #: Without ``since``: ``True``.
    recovered: bool

    @property
    def position(self) -> dict[str, Any] | None:
        """The group's latest position, as messages carry it (``None`` without history)."""
        return None if self.epoch is None else {"epoch": self.epoch, "offset": self.offset}


def parse_since(since: Any) -> tuple[str, int] | None:
    """``(epoch, offset)`` of a ``since`` argument: a position as delivered (or ``None``)."""
    if since is None:
        return None
    if isinstance(since, dict):
        epoch, offset = since.get("epoch"), since.get("offset")
        if isinstance(epoch, str) and type(offset) is int and offset >= 0:
            return epoch, offset
    raise TypeError(
        'since must be a position as a message carries it, {"epoch": str, "offset": int}, '
        f"or None; got {since!r}"
    )


def recovered(found: HistorySlice, since: tuple[str, int] | None) -> bool:
    """Whether ``found`` (read after ``since``) holds every message after ``since``."""
    if since is None:
        return True
    epoch, offset = since
    if found.epoch != epoch or offset > found.offset:
        return False
    if offset == found.offset:
        return True
    return bool(found.entries) and found.entries[0][0] == offset + 1


# -- sending -------------------------------------------------------------------------------------


# -- receiving -----------------------------------------------------------------------------------


@dataclass
class _Order:
    """What one history group's receiver knows: where its members are in the group's order."""

    epoch: str | None = None
    last: int = 0
    #: Begun with no history on the broker: the group's first message is offset 1 of its epoch.
    from_start: bool = False
    #: Messages past the next offset, by offset, waiting for the ones before them.
    held: dict[int, bytes] = field(default_factory=dict)
    #: The epoch of the held messages.
    held_epoch: str | None = None
    filling: bool = False
    #: The next message delivered says that messages before it were lost.
    gap: bool = False
    #: CRC-32 of the last :data:`REMEMBERED` payloads delivered, by offset: tells a duplicate
    #: (the same payload again) from history rewritten under an offset already delivered.
    seen: dict[int, int] = field(default_factory=dict)


class Sequencer:
    """Delivers history groups' messages in offset order, filling holes from history."""

    def __init__(
        self,
        deliver: Callable[[str, bytes, str | None], None],
        read: Callable[[str, int], Awaitable[HistorySlice]],
        spawn: Callable[[Awaitable[Any]], Any],
        drop: Drop,
    ) -> None:
        self._deliver = deliver
        self._read = read
        self._spawn = spawn
        self._drop = drop
        self._orders: dict[str, _Order] = {}

    def begin(self, group: str, epoch: str | None, offset: int) -> None:
        """This process is about to subscribe ``group``, whose latest position on the broker is
        ``(epoch, offset)`` (``None``: no history yet): every later message is delivered, from
        history if the subscription misses it (on a NATS cluster a new subscription reaches the
        other servers a moment after it is confirmed)."""
        self._orders[group] = _Order(epoch=epoch, last=offset, from_start=epoch is None)

    def forget(self, group: str) -> None:
        """This process no longer has members of ``group``."""
        self._orders.pop(group, None)

    def on_batch(self, group: str, data: bytes) -> None:
        """A positioned batch arrived on ``group``'s history subject."""
        try:
            epoch, first, payloads = unpack_positioned(data)
        except ValueError as exc:
            self._drop("garbage", str(exc), 1)
            return
        order = self._orders.get(group)
        if order is None:
            order = self._orders[group] = _Order()
        for index, payload in enumerate(payloads):
            self._take(group, order, epoch, first + index, payload)

    def _take(self, group: str, order: _Order, epoch: str, offset: int, payload: bytes) -> None:
        if order.epoch is None:
            # The group's first message since it was subscribed, with no position known before:
            # offset 1 of its epoch if there was no history then, else a baseline.
            order.epoch, order.last = epoch, (0 if order.from_start else offset - 1)
        elif epoch != order.epoch:
            if order.filling:
                self._hold(group, order, epoch, offset, payload)
                return
            self._new_epoch(group, order, epoch)
        if offset <= order.last:
            delivered = order.seen.get(offset)
            if delivered is None or delivered == zlib.crc32(payload):
                return  # delivered already (a refill overlapping a live batch)
            self._rewritten(group, order, offset)
        if offset > order.last + 1 or order.filling:
            self._hold(group, order, epoch, offset, payload)
            return
        self._deliver_one(group, order, offset, payload)
        self._release(group, order)

    def _new_epoch(self, group: str, order: _Order, epoch: str) -> None:
        """The broker lost the group's history (restarted without it, flushed): what came after
        our last offset in the old epoch is gone — counted, and the next message delivered is
        marked — while every message of the new epoch came after it, so delivery goes on from
        the new epoch's first offset (from history if this process missed it)."""
        self._drop("history_gap", f"{group}: epoch {order.epoch} ended", 1)
        order.epoch, order.last, order.gap = epoch, 0, True
        order.held.clear()
        order.seen.clear()

    def _rewritten(self, group: str, order: _Order, offset: int) -> None:
        """Another message under an offset already delivered: the broker's history was rewritten
        from there (a Redis failover to a replica that lacked the last appends, whose offsets
        the next appends took again). What was delivered from ``offset`` on is not what the
        group holds now: go on from the new messages, marked and counted."""
        self._drop(
            "history_gap",
            f"{group}: history rewritten from offset {offset} (a failover lost its end)",
            order.last - offset + 1,
        )
        order.last, order.gap = offset - 1, True
        order.held.clear()
        for stale in [known for known in order.seen if known >= offset]:
            del order.seen[stale]

    def _hold(self, group: str, order: _Order, epoch: str, offset: int, payload: bytes) -> None:
        if order.held and order.held_epoch != epoch:
            order.held.clear()  # a newer epoch supersedes what waited in the old one
        order.held_epoch = epoch
        order.held[offset] = payload
        if len(order.held) > MAX_HELD:  # history cannot keep up: give up on the hole
            self._give_up(group, order)
        elif not order.filling:
            order.filling = True
            self._spawn(self._fill(group, order))

    def _deliver_one(self, group: str, order: _Order, offset: int, payload: bytes) -> None:
        order.last = offset
        seen = order.seen
        seen[offset] = zlib.crc32(payload)
        if len(seen) > REMEMBERED:
            del seen[next(iter(seen))]
        gap, order.gap = order.gap, False
        try:
            message = envelope.decode(payload)
            body = envelope.with_position(message.body, order.epoch or "", offset, gap)
        except ValueError as exc:
            self._drop("garbage", f"{group} offset {offset}: {exc}", 1)
            order.gap = order.gap or gap
            return
        self._deliver(group, body, message.exclude)

    def _release(self, group: str, order: _Order) -> None:
        """Deliver the held messages that are next in order now."""
        while order.held and order.held_epoch == order.epoch:
            payload = order.held.pop(order.last + 1, None)
            if payload is None:
                return
            self._deliver_one(group, order, order.last + 1, payload)

    def _give_up(self, group: str, order: _Order) -> None:
        """Deliver what is held, oldest first, marking and counting the holes before it."""
        if order.held_epoch != order.epoch:
            self._drop("history_gap", f"{group}: epoch {order.epoch} ended", 1)
            order.epoch, order.last = order.held_epoch, min(order.held) - 1
            order.gap = True
        for offset in sorted(order.held):
            if offset > order.last + 1:
                missing = offset - order.last - 1
                self._drop("history_gap", f"{group}: {missing} before offset {offset}", missing)
                order.gap = True
            if offset > order.last:
                self._deliver_one(group, order, offset, order.held[offset])
        order.held.clear()

    async def _fill(self, group: str, order: _Order) -> None:
        """Read from history what follows the last offset delivered and deliver it, then what
        is held; give up on a hole that history no longer covers (marked and counted)."""
        try:
            while self._orders.get(group) is order:
                found = await self._read_retrying(group, order)
                if found is None:
                    if order.held:
                        self._give_up(group, order)
                    return
                if found.epoch != order.epoch:
                    if found.epoch is None:  # no history at all: the next message is marked
                        if order.held:
                            self._give_up(group, order)
                        return
                    held, held_epoch = dict(order.held), order.held_epoch
                    self._new_epoch(group, order, found.epoch)
                    if held_epoch == found.epoch:
                        order.held.update(held)  # already of the new epoch: keep them
                    continue  # read the new epoch from its start
                if not recovered(found, (order.epoch or "", order.last)):
                    kept = found.entries[0][0] if found.entries else found.offset + 1
                    missing = max(1, kept - order.last - 1)
                    self._drop("history_gap", f"{group}: {missing} no longer kept", missing)
                    order.gap = True
                for offset, payload in found.entries:
                    if offset > order.last:
                        self._deliver_one(group, order, offset, payload)
                for offset in [offset for offset in order.held if offset <= order.last]:
                    del order.held[offset]
                self._release(group, order)
                if not order.held:
                    return
                if not found.entries:  # held messages past all that history has
                    self._give_up(group, order)
                    return
        finally:
            order.filling = False

    async def _read_retrying(self, group: str, order: _Order) -> HistorySlice | None:
        """Read after the last offset delivered, retrying while the broker is unreachable (the
        connection that brought the messages may be back before the one that reads) for up
        to :data:`READ_PATIENCE` seconds; ``None`` if it never answered."""
        deadline = asyncio.get_running_loop().time() + READ_PATIENCE
        pause = 0.05
        while True:
            try:
                return await self._read(group, order.last)
            except BrokerUnavailable as exc:
                if asyncio.get_running_loop().time() + pause > deadline:
                    logger.warning("reading the history of %s failed: %s", group, exc)
                    return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def catch_up(self) -> None:
        """After a reconnect: read every group's history from its last offset (what was
        published while the connection was down may have no later message to reveal it)."""
        for group, order in self._orders.items():
            if order.epoch is not None and not order.filling:
                order.filling = True
                self._spawn(self._fill(group, order))
