"""What a layer's configuration means to its parts, frozen: one object every part may read.

The public layer (:class:`~channels_neffos.NeffosChannelLayer`) checks its ``CONFIG`` options
and builds one :class:`LayerSettings`; every per-event-loop router and each of its parts gets
that object, never the layer itself. So a part cannot reach back into its owner, and a setting
cannot change under a running router.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..transports.base import HistoryLimits
from .history import HistoryRules, history_for


@dataclass(frozen=True, slots=True)
class LayerSettings:
    #: Namespace of every broker name (see :mod:`.names`).
    prefix: str
    #: Seconds a message waits to be received before it is dropped.
    expiry: float
    #: Seconds a group membership lasts unless renewed.
    group_expiry: float
    #: Messages a channel holds, unless ``channel_capacity`` (compiled) says otherwise.
    capacity: int
    channel_capacity: tuple[tuple[re.Pattern[str], int], ...]
    #: Whether processes list themselves in the broker's registry (``group_members``).
    presence: bool
    #: Shown in errors: "Redis", "NATS".
    broker_name: str
    #: Bytes reserved for the envelope around a message body (pid, names, reply address).
    envelope_allowance: int = 512
    #: The ``history`` option, compiled: which groups keep history, and how much.
    history: HistoryRules = ()

    def history_for(self, group: str) -> HistoryLimits | None:
        """The history limits of ``group``; ``None`` for a group without history."""
        return history_for(self.history, group) if self.history else None

    def capacity_for(self, channel: str) -> int:
        """The capacity of ``channel``: the first ``channel_capacity`` pattern that matches it,
        else ``capacity`` (Channels' rule, as ``BaseChannelLayer.get_capacity``)."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    @property
    def sweep_interval(self) -> float:
        """How often a router looks for dead channels (see ``Mailboxes.sweep``)."""
        return min(self.expiry, 30.0)
