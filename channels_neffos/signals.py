"""Django signals a layer sends about its broker connection.

Each event-loop process of a layer (one per event loop that uses it; see
:mod:`channels_neffos._core.router`) keeps its own broker connection, so each sends its own
signals:

* :data:`broker_connection_lost` — once when the process's connection to the broker drops (not
  again while it stays down, however many of its sockets drop or reconnect attempts fail).
* :data:`broker_connection_restored` — once when it is back and the process's subscriptions are
  re-issued.

* :data:`messages_dropped` — when a layer drops messages (a full channel, expiry, the broker
  down...: the reasons of :mod:`channels_neffos._drops`), at the rate drops are logged: the first
  drop of a reason at once, then at most once per reason per 10 seconds, with how many were
  dropped since the last one (``layer.counters`` counts each).

The first two are sent with ``sender`` = the layer's class and these keyword arguments:

``layer``
    the layer instance (``channels_neffos.RedisChannelLayer`` or ``NatsChannelLayer``; each
    broker of a ``MultiChannelLayer`` sends its own);
``broker``
    the broker's address, as in error messages (passwords masked);
``pid``
    the process id of the layer process, as in its channel names;
``reason``
    (lost) why, as text; ``down_for`` (restored) seconds since the connection was lost.

``messages_dropped`` is sent with ``sender`` = the layer's class, ``layer``, ``reason`` (a key of
``layer.counters``), ``count`` and ``where`` (the latest channel, group or subject concerned).

Receivers run on the event loop, inside the layer's connection handling: they must return
quickly and must not block (schedule a task for anything slow). An exception in a receiver is
logged and does not disturb the layer. While the connection is down, each instance keeps serving
its own clients; what it could not publish is counted in ``layer.counters`` (see
:mod:`channels_neffos._drops`). ``docs/operations.rst`` shows what each fault does.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("channels_neffos")

#: The broker connection of one layer process was lost (see the module docstring).
broker_connection_lost = Signal()
#: The broker connection of one layer process is back (see the module docstring).
broker_connection_restored = Signal()
#: A layer dropped messages (rate-limited; see the module docstring).
messages_dropped = Signal()


def send_safely(signal: Signal, sender: type, **details: Any) -> None:
    """Send ``signal``; a receiver that raises is logged and disturbs nothing else."""
    for receiver, response in signal.send_robust(sender, **details):
        if isinstance(response, Exception):
            logger.error(
                "a receiver of channels_neffos signals failed: %r", receiver, exc_info=response
            )
