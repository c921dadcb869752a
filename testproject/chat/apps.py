"""The chat app; on startup it logs the layer's broker connection signals (see ready())."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger("chat")


def broker_lost(sender: type, *, broker: str, pid: str, reason: str, **_: Any) -> None:
    logger.warning("broker connection lost: %s (layer process %s): %s", broker, pid, reason)


def broker_restored(sender: type, *, broker: str, pid: str, down_for: float, **_: Any) -> None:
    logger.warning(
        "broker connection restored: %s (layer process %s) after %.1f s", broker, pid, down_for
    )


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        # What an operator would hook up (or send to their alerting): see channels_neffos.signals.
        from channels_neffos.signals import broker_connection_lost, broker_connection_restored

        broker_connection_lost.connect(broker_lost)
        broker_connection_restored.connect(broker_restored)
