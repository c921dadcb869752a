"""Whether one layer process is connected to its broker, and telling the world when that changes.

A transport reports every socket it loses and every reconnect (Redis has a command and a pub/sub
connection, NATS one client that may retry many times). :class:`ConnectionState` turns those
reports into the two transitions a user cares about — up to down, down to up — and sends the
Django signals of :mod:`channels_neffos.signals` on each, exactly once per outage. Every report
is still counted in ``layer.counters`` (``connection_lost``, ``connection_restored``).
"""

from __future__ import annotations

from collections import Counter
from time import monotonic
from typing import Any

from django.dispatch import Signal

from .signals import broker_connection_lost, broker_connection_restored, send_safely


class ConnectionState:
    """Up or down, for one process's broker connection; sends a signal on each change."""

    def __init__(self, layer: Any, pid: str, broker: str, counters: Counter[str]) -> None:
        self._layer = layer  # only handed to signal receivers
        self._pid = pid
        self._broker = broker
        self._counters = counters
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
        text = str(reason) if reason is not None else "the connection closed"
        self._send(broker_connection_lost, reason=text)

    def restored(self) -> None:
        self._counters["connection_restored"] += 1
        if self.down_since is None:
            return
        down_for, self.down_since = monotonic() - self.down_since, None
        self._send(broker_connection_restored, down_for=down_for)

    def _send(self, signal: Signal, **details: object) -> None:
        layer = self._layer
        send_safely(signal, type(layer), layer=layer, broker=self._broker, pid=self._pid, **details)
