"""Counting and rate-limited logging of messages the layer had to drop.

Nothing is dropped silently: every drop increments ``layer.counters[reason]`` and is logged at
WARNING — the first drop of a reason at once, then at most one line per ``interval`` seconds per
reason, carrying how many were dropped since the last line, so a flood cannot flood the logs.
"""

from __future__ import annotations

import logging
from collections import Counter
from time import monotonic

logger = logging.getLogger("channels_neffos")

#: Why messages get dropped; the keys of ``layer.counters``.
REASONS = {
    "channel_full": "the receiving channel was at capacity",
    "expired": "nobody received it within expiry",
    "broker_down": "the broker connection was down",
    "garbage": "it arrived from the broker in a format this layer cannot read",
    "unknown_channel": "no channel of that name lives in this process any more",
}


class DropLog:
    def __init__(self, counters: Counter[str], interval: float = 10.0) -> None:
        self.counters = counters
        self.interval = interval
        self._last_logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def __call__(self, reason: str, where: str, count: int = 1) -> None:
        self.counters[reason] += count
        self._unlogged[reason] += count
        now = monotonic()
        if now - self._last_logged.get(reason, -self.interval) >= self.interval:
            self._last_logged[reason] = now
            dropped, self._unlogged[reason] = self._unlogged[reason], 0
            logger.warning(
                "channels_neffos dropped %d message(s) because %s (latest: %s); "
                "see layer.counters[%r]",
                dropped,
                REASONS[reason],
                where,
                reason,
            )
