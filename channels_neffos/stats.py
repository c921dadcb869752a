"""Snapshots of a layer's state, for status commands, health checks and metrics.

* :meth:`NeffosChannelLayer.stats() <channels_neffos.engine.NeffosChannelLayer.stats>` — this
  OS process's view, at once and without the broker: a :class:`LayerStats` with one
  :class:`ProcessStats` per event loop that uses the layer.
* :meth:`NeffosChannelLayer.instances() <channels_neffos.engine.NeffosChannelLayer.instances>`
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
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import envelope
from .envelope import CHANNEL, Envelope
from .exceptions import BrokerUnavailable

if TYPE_CHECKING:
    from .process import LayerProcess

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


def process_stats(process: LayerProcess) -> ProcessStats:
    """A snapshot of ``process``."""
    # Not at import: the namespaces are built on the layer (a cycle).
    from .namespaces.hub import scope_sizes
    from .namespaces.outgoing import counters as namespace_counters

    now = time.monotonic()
    # Copies first: a metrics scrape may run in another thread while the loop changes these.
    group_sizes = {group: len(members) for group, members in list(process.groups.items())}
    group_sizes = {group: size for group, size in group_sizes.items() if size}
    mailboxes = list(process.mailboxes.values())
    largest = sorted(group_sizes.items(), key=lambda item: (-item[1], item[0]))[:LARGEST_GROUPS]
    down_since = process.connection.down_since
    scopes = scope_sizes(process.loop, process.layer)
    rooms = sorted(
        ((f"{namespace}/{room}", size) for (namespace, room), size in scopes.items() if room),
        key=lambda item: (-item[1], item[0]),
    )[:LARGEST_GROUPS]
    return ProcessStats(
        pid=process.pid,
        host=socket.gethostname(),
        os_pid=os.getpid(),
        started_at=process.started_at,
        uptime=round(now - process.started_monotonic, 3),
        connected=down_since is None,
        down_for=None if down_since is None else round(now - down_since, 3),
        channels=len(mailboxes),
        queued=sum(len(mailbox) for mailbox in mailboxes),
        groups=len(group_sizes),
        members=sum(group_sizes.values()),
        largest_groups=dict(largest),
        pending_replies=len(process.replies.pending),
        published=process.outbox.published + process.published_directly,
        received=process.received,
        counters=dict(process.layer.counters),
        connections={namespace: size for (namespace, room), size in scopes.items() if not room},
        rooms=dict(rooms),
        namespace_events=dict(namespace_counters),
    )


async def broker_round_trip(process: LayerProcess, channel: str, timeout: float) -> float:
    """Seconds for a message from ``process`` to ``channel`` (one of its own) *through the
    broker* — a plain send would take the local shortcut. ``BrokerUnavailable`` if it does not
    arrive within ``timeout``."""
    await process.listen()
    mailbox = process.mailbox(channel)
    body = envelope.pack_body({"type": "neffos.ping"})
    started = time.monotonic()
    try:
        await process.publish(
            process.channel_subject(process.pid, channel),
            Envelope(CHANNEL, process.pid, channel, body),
        )
        await asyncio.wait_for(mailbox.get(), timeout)
    except (asyncio.TimeoutError, ConnectionError) as exc:
        raise BrokerUnavailable(
            process.transport.url, f"a message through the broker did not come back in {timeout} s"
        ) from exc
    finally:
        process.mailboxes.pop(channel, None)
    return time.monotonic() - started
