"""Whether one router is connected to its broker, and telling the world when that changes.

A transport reports every socket it loses and every reconnect (Redis has a command and a pub/sub
connection, NATS one client that may retry many times). :class:`BrokerStatus` turns those
reports into the two transitions a user cares about — up to down, down to up — and calls
``on_lost(reason)`` / ``on_restored(down_for)`` exactly once per outage (the layer sends its
Django signals, :mod:`channels_neffos.signals`, from them). Every report is still counted
(``connection_lost``, ``connection_restored`` in ``layer.counters``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from time import monotonic


class BrokerStatus:
    """Up or down, for one router's broker connection."""

    __slots__ = ("_counters", "_on_lost", "_on_restored", "down_since")

    def __init__(
        self,
        counters: Counter[str],
        on_lost: Callable[[str], None],
        on_restored: Callable[[float], None],
    ) -> None:
        self._counters = counters
        self._on_lost = on_lost
        self._on_restored = on_restored
        #: monotonic time the connection was lost, or None while it is up
        self.down_since: float | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    def lost(self, reason: BaseException | None) -> None:
        self._counters["connection_lost"] += 1
        if self.down_since is not None:
            return
        self.down_since = monotonic()
        self._on_lost(str(reason) if reason is not None else "the connection closed")

    def restored(self) -> None:
        self._counters["connection_restored"] += 1
        if self.down_since is None:
            return
        down_for, self.down_since = monotonic() - self.down_since, None
        self._on_restored(down_for)
