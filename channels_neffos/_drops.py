"""Counting and rate-limited logging of messages that had to be dropped.

Nothing is dropped silently: every drop increments ``layer.counters[reason]`` and is logged at
WARNING — the first drop of a reason at once, then at most one line per ``interval`` seconds per
reason, carrying how many were dropped since the last line, so a flood cannot flood the logs.
:class:`RateLimitedLog` is that rule on its own, also used for frames the neffos consumer drops.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from time import monotonic

logger = logging.getLogger("channels_neffos")

#: Why messages get dropped; the keys of ``layer.counters``.
REASONS = {
    "channel_full": "the receiving channel was at capacity",
    "expired": "nobody received it within expiry",
    "broker_down": "the broker connection was down",
    "garbage": "it arrived from the broker in a format this layer cannot read",
    "unknown_channel": "no channel of that name lives in this process any more",
    "refused": "the broker refused it (a permission this user lacks, or another error it "
    "answered, logged with it)",
    "demoted": "the Redis server it was written to had just become a replica (a Sentinel "
    "failover); the layer moves to the new master",
    "undecryptable": "no key in symmetric_encryption_keys could decrypt it",
    "unconfirmed": "it was sent, but the connection to the broker dropped before the broker "
    "confirmed it; it may or may not have arrived",
    "moved": "a Redis Cluster node answered that its hash slot had moved to another node "
    "(resharding, a failover) as it was published; the layer follows the move",
    "history_unwritten": "the broker did not take it into a history group's history (the "
    "connection was down, or a refusal): it got no position, and no member received it",
    "history_gap": "a history group's messages were lost before they reached this process, and "
    "its history no longer had them (kept too briefly, or lost by the broker: a new epoch); the "
    "next message members received carries gap=True in its __position__",
    "no_subscriber": "the broker had no subscriber for it: the receiving process is gone, or "
    "has not re-subscribed yet after a reconnect",
}


class RateLimitedLog:
    """Log the first event of a kind at once, then at most one line per ``interval`` seconds
    per kind, saying how many happened since the last line."""

    def __init__(self, log: logging.Logger, level: int, interval: float = 10.0) -> None:
        self.log = log
        self.level = level
        self.interval = interval
        self._last_logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def __call__(
        self, kind: str, message: str, *args: object, count: int = 1, exc_info: bool = False
    ) -> int:
        """``message`` is formatted with the count since the last line, then ``args``.

        ``exc_info=True`` (inside an ``except`` block) adds the traceback to the lines that are
        logged: the first one of a kind, then one per ``interval``. Returns the count the line
        carried, or 0 if nothing was logged this time.
        """
        self._unlogged[kind] += count
        now = monotonic()
        if now - self._last_logged.get(kind, -self.interval) < self.interval:
            return 0
        self._last_logged[kind] = now
        happened, self._unlogged[kind] = self._unlogged[kind], 0
        self.log.log(self.level, message, happened, *args, exc_info=exc_info)
        return happened


class DropLog:
    """Counts every drop; logs (and tells ``on_report``, e.g. to send the ``messages_dropped``
    signal) at the rate of :class:`RateLimitedLog`, with the count since the last report."""

    def __init__(
        self,
        counters: Counter[str],
        interval: float = 10.0,
        on_report: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.counters = counters
        self._log = RateLimitedLog(logger, logging.WARNING, interval)
        self._on_report = on_report

    def __call__(self, reason: str, where: str, count: int = 1) -> None:
        self.counters[reason] += count
        reported = self._log(
            reason,
            "channels_neffos dropped %d message(s) because %s (latest: %s); see layer.counters[%r]",
            REASONS[reason],
            where,
            reason,
            count=count,
        )
        if reported and self._on_report is not None:
            self._on_report(reason, reported, where)
