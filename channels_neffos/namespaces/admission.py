"""Admission control: at most ``NEFFOS_ACCEPT_RATE`` new WebSocket connections per second.

When an instance dies, its clients reconnect to the others at once — a reconnect storm. Each
handshake costs the survivor far more than a message does, and its own clients wait behind
them. With ``NEFFOS_ACCEPT_RATE`` set (Django setting, connections per second per process;
default ``None``: no limit), a :class:`~.consumer.NeffosConsumer` handshake beyond the rate is
refused at once — answered 403 before any channel, task or hook — and counted
(``channels_neffos.namespaces.counters["refused_busy"]``, logged at INFO at most once per 10 s).
The client helper (``recovery.js``) retries after a jittered, growing delay, so the storm spreads
itself over time instead of stalling the instance; a plain neffos.js client must retry itself.

The rate is a token bucket: up to one second's worth of handshakes may come at once, then
``NEFFOS_ACCEPT_RATE`` a second.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from .._drops import RateLimitedLog
from .outgoing import counters

logger = logging.getLogger("channels_neffos.namespaces")
_refused = RateLimitedLog(logger, logging.INFO)


class Admission:
    """The process's token bucket of new connections."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._filled_at: float | None = None

    def admit(self) -> bool:
        """Whether one more connection may be accepted now (takes its token if so)."""
        rate = getattr(settings, "NEFFOS_ACCEPT_RATE", None)
        if rate is None:
            return True
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
            raise ValueError(
                f"settings.NEFFOS_ACCEPT_RATE must be a number of connections per second > 0, "
                f"or None for no limit; got {rate!r}"
            )
        now = time.monotonic()
        if self._filled_at is None:
            self._tokens = float(rate)
        else:
            self._tokens = min(float(rate), self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        counters["refused_busy"] += 1
        _refused(
            "busy",
            "%d WebSocket handshake(s) refused: more than NEFFOS_ACCEPT_RATE=%s a second",
            rate,
        )
        return False


#: The admission control of this process.
admission = Admission()
