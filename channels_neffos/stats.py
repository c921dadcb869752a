"""Snapshots of a layer's state, for status commands, health checks and metrics.

* :meth:`NeffosChannelLayer.stats() <channels_neffos.NeffosChannelLayer.stats>` — this
  OS process's view, at once and without the broker: a :class:`LayerStats` with one
  :class:`ProcessStats` per event loop that uses the layer.
* :meth:`NeffosChannelLayer.instances() <channels_neffos.NeffosChannelLayer.instances>`
  — every live process sharing the layer's prefix, on every instance, each answering with its own
  :class:`ProcessStats` (through presence: the broker's registry of processes, then one small
  request per process; a process is listed once it holds a group member). Needs presence.

A snapshot is a copy: reading it costs nothing and changes nothing. Counters are those of
``layer.counters`` (drops by reason, connection events; see :mod:`channels_neffos._drops`) and
count since the layer object was made.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: How many of a process's largest groups a snapshot names (all are counted).
LARGEST_GROUPS = 20


@dataclass(frozen=True)
class ProcessStats:
    """One layer process (one event loop of one OS process)."""

    #: The layer's process id, as in its channel names.
    pid: str
    #: Where it runs: host name and OS process id.
    host: str
    os_pid: int
    #: Wall-clock time it started (seconds since the epoch), and seconds since.
    started_at: float
    uptime: float
    #: Whether its broker connection is up; if not, for how many seconds it has been down.
    connected: bool
    down_for: float | None
    #: Channels with a mailbox here, and the messages waiting in them.
    channels: int
    queued: int
    #: Groups with members here, and the memberships.
    groups: int
    members: int
    #: Its largest groups (up to LARGEST_GROUPS), name -> local members.
    largest_groups: dict[str, int] = field(default_factory=dict)
    #: Asks (and membership changes) waiting for a reply.
    pending_replies: int = 0
    #: Messages handed to the broker (published, and pushed to worker channels), and messages
    #: that arrived from it, since the process started. Local deliveries are in neither.
    published: int = 0
    received: int = 0
    #: neffos WebSocket connections here, per namespace; and per room (``"namespace/room"``,
    #: its largest LARGEST_GROUPS), as the namespaces' hub of this layer knows them.
    connections: dict[str, int] = field(default_factory=dict)
    rooms: dict[str, int] = field(default_factory=dict)
    #: What the namespaces counted in this OS process (``slow_client_closed``, ...; see
    #: :data:`channels_neffos.namespaces.counters`).
    namespace_events: dict[str, int] = field(default_factory=dict)
    #: The layer's counters in this OS process (see the module docstring).
    counters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessStats:
        """Built from :meth:`to_dict` output (of this or a newer version: unknown keys ignored)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


class LatencyHistogram:
    """Counts of durations (seconds) in fixed buckets, as Prometheus histograms take them."""

    #: Upper bounds of the buckets, in seconds (a last, unbounded one follows).
    BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [[upper bound, cumulative count], ...], "sum": s, "count": n}``; the
        last bound is ``inf``."""
        cumulative, buckets = 0, []
        for bound, count in zip((*self.BOUNDS, math.inf), list(self.counts), strict=True):
            cumulative += count
            buckets.append([bound, cumulative])
        return {"buckets": buckets, "sum": self.sum, "count": self.count}


@dataclass(frozen=True)
class LayerStats:
    """One layer object in this OS process."""

    #: The layer's class name, e.g. ``RedisChannelLayer``.
    backend: str
    #: The broker's address, passwords masked.
    broker: str
    prefix: str
    counters: dict[str, int]
    processes: list[ProcessStats]
    #: Answered asks (``ask``/``group_ask``) of this layer object: seconds to the answer, as
    #: :meth:`LatencyHistogram.snapshot` gives it.
    ask_latency: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: What a process reports beside the layer's own state: ``reporter(loop, layer)`` returns some
#: of :class:`ProcessStats`' fields (``connections``, ``rooms``, ``namespace_events``) for the
#: given layer's process on ``loop``. Something built on the layer (the namespaces) registers
#: one with :func:`add_reporter`; the layers never import what reports.
Reporter = Callable[[asyncio.AbstractEventLoop, Any], dict[str, Any]]
_reporters: list[Reporter] = []


def add_reporter(reporter: Reporter) -> None:
    """Have every :class:`ProcessStats` snapshot include what ``reporter`` says (see
    :data:`Reporter`); registering the same reporter twice has no effect."""
    if reporter not in _reporters:
        _reporters.append(reporter)


def reported(loop: asyncio.AbstractEventLoop, layer: Any) -> dict[str, Any]:
    """What every registered reporter says about ``layer``'s process on ``loop``."""
    fields: dict[str, Any] = {}
    for reporter in list(_reporters):
        fields.update(reporter(loop, layer))
    return fields
