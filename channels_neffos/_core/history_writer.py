"""Sending to history groups: batched appends, and what waits while the broker is unreachable.

A :class:`HistoryWriter` takes each message sent to a history group (see :mod:`.history`) and
appends it to the broker, which gives it the group's next offset:

* **Batches.** What one turn of the event loop sent to a group leaves, when the turn ends, as one
  append of up to :data:`BATCH_MESSAGES` messages and :data:`BATCH_BYTES` bytes, in send order.
  The writer is driven by a callback (``loop.call_soon``), not a task: ``asyncio.run`` and
  ``async_to_sync`` cancel every task before the loop closes, and a cancelled task would take
  its messages with it. The transport queues each append on its connection without waiting for
  the answer, as it does a publish; a refusal it learns of later is counted by the transport.
* **Outages.** An append that cannot be queued because the connection is down is kept, with
  every later message to any history group behind it (so a group's messages reach the broker in
  send order), and appended once the router reports the connection restored
  (:meth:`HistoryWriter.restored`). Kept at most :data:`OUTAGE_MESSAGES` messages, each for at
  most :data:`OUTAGE_PATIENCE` seconds: beyond that the oldest are dropped, and so is whatever
  is still kept when the layer closes — counted as ``history_unwritten`` and logged, never
  silently. The broker gives kept messages their offsets when they are appended: receivers get
  them in the group's one order, late.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable

from ..exceptions import BrokerUnavailable
from ..transports.base import HistoryLimits, Subject
from .mailboxes import Drop

#: The most messages (and bytes) one append carries.
BATCH_MESSAGES = 512
BATCH_BYTES = 256 * 1024
#: Messages kept for history groups while the broker is unreachable (all groups together).
OUTAGE_MESSAGES = 10_000
#: Seconds a message is kept waiting for the broker before it is dropped (and counted).
OUTAGE_PATIENCE = 30.0

Append = Callable[[Subject, list[bytes], HistoryLimits, str], None]


class HistoryWriter:
    """Appends history groups' messages to the broker (see the module docstring)."""

    def __init__(self, append: Append, drop: Drop) -> None:
        self._append = append
        self._drop = drop
        #: group -> (its subject, its limits, the payloads sent this turn)
        self._queued: dict[str, tuple[Subject, HistoryLimits, list[bytes]]] = {}
        self._scheduled: asyncio.Handle | None = None
        #: group -> (subject, limits, [(time kept, payload)]): waiting for the connection
        self._kept: dict[str, tuple[Subject, HistoryLimits, deque[tuple[float, bytes]]]] = {}
        self._kept_count = 0
        self._expiry: asyncio.TimerHandle | None = None
        self._epoch_seed = secrets.token_hex(6)
        self._epochs = 0
        #: Messages handed to the transport (for stats).
        self.written = 0

    def send(self, group: str, subject: Subject, limits: HistoryLimits, payload: bytes) -> None:
        """Queue ``payload`` for ``group``; it leaves when this turn of the event loop ends."""
        queued = self._queued.get(group)
        if queued is None:
            queued = self._queued[group] = (subject, limits, [])
        queued[2].append(payload)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.write)

    def _new_epoch(self) -> str:
        """A candidate epoch: unique across processes and appends (taken only by a group that
        has none on the broker)."""
        self._epochs += 1
        return f"{self._epoch_seed}{self._epochs:x}"

    def write(self) -> None:
        """Hand everything queued to the transport now (also called by the router's close);
        while messages are kept for an outage, new ones are kept behind them."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        queued, self._queued = self._queued, {}
        for group, (subject, limits, payloads) in queued.items():
            if self._kept:
                self._keep(group, subject, limits, payloads)
                continue
            written = self._write(subject, limits, payloads)
            if written < len(payloads):
                self._keep(group, subject, limits, payloads[written:])

    def _write(self, subject: Subject, limits: HistoryLimits, payloads: list[bytes]) -> int:
        """Append ``payloads`` in batches; how many were handed over before the connection
        turned out to be down."""
        start = 0
        while start < len(payloads):
            batch: list[bytes] = []
            size = 0
            for payload in payloads[start : start + BATCH_MESSAGES]:
                if batch and size + len(payload) > BATCH_BYTES:
                    break
                batch.append(payload)
                size += len(payload)
            try:
                self._append(subject, batch, limits, self._new_epoch())
            except BrokerUnavailable:
                return start
            start += len(batch)
            self.written += len(batch)
        return start

    # -- outages -------------------------------------------------------------------------------

    def _keep(
        self, group: str, subject: Subject, limits: HistoryLimits, payloads: list[bytes]
    ) -> None:
        now = time.monotonic()
        kept = self._kept.get(group)
        if kept is None:
            kept = self._kept[group] = (subject, limits, deque())
        kept[2].extend((now, payload) for payload in payloads)
        self._kept_count += len(payloads)
        excess = self._kept_count - OUTAGE_MESSAGES
        if excess > 0:
            self._drop_oldest(excess, f"more than {OUTAGE_MESSAGES} messages waiting")
        if self._expiry is None and self._kept:
            self._expiry = asyncio.get_running_loop().call_later(OUTAGE_PATIENCE, self._expire)

    def _drop_oldest(self, count: int, why: str) -> None:
        for _ in range(count):
            group = min(self._kept, key=lambda name: self._kept[name][2][0][0])
            self._pop_oldest(group)
        self._drop("history_unwritten", f"the broker is unreachable: {why}", count)

    def _pop_oldest(self, group: str) -> None:
        entries = self._kept[group][2]
        entries.popleft()
        self._kept_count -= 1
        if not entries:
            del self._kept[group]

    def _expire(self) -> None:
        """Drop what waited longer than :data:`OUTAGE_PATIENCE`; look again when the oldest left
        is due."""
        self._expiry = None
        deadline = time.monotonic() - OUTAGE_PATIENCE
        expired = 0
        for group in list(self._kept):
            entries = self._kept[group][2]
            while entries and entries[0][0] <= deadline:
                self._pop_oldest(group)
                expired += 1
                if group not in self._kept:
                    break
        if expired:
            self._drop(
                "history_unwritten",
                f"the broker was unreachable for more than {OUTAGE_PATIENCE:g} s",
                expired,
            )
        if self._kept:
            oldest = min(entries[0][0] for _, _, entries in self._kept.values())
            delay = max(0.0, oldest + OUTAGE_PATIENCE - time.monotonic())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def restored(self) -> None:
        """The connection is back: append what was kept, in order, then what came since."""
        if not self._kept:
            return
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        kept, self._kept = self._kept, {}
        self._kept_count = 0
        later, self._queued = self._queued, {}
        for group, (subject, limits, entries) in kept.items():
            self._queued[group] = (subject, limits, [payload for _, payload in entries])
        for group, (subject, limits, payloads) in later.items():
            queued = self._queued.setdefault(group, (subject, limits, []))
            queued[2].extend(payloads)
        self.write()

    def abandon(self) -> None:
        """The layer closes: what is still kept is lost, and counted."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._kept_count:
            count, self._kept, self._kept_count = self._kept_count, {}, 0
            self._drop(
                "history_unwritten", "the layer closed while the broker was unreachable", count
            )
