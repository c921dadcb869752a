"""A Celery app whose tasks use the channel layer as Django code does: through ``async_to_sync``.

Run by the worker that ``test_celery.py`` starts; configured from the environment (the layer's
backend and config, the Celery broker and result backend), never imported by the tests.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": os.environ["LAYER_BACKEND"],
                "CONFIG": json.loads(os.environ["LAYER_CONFIG"]),
            }
        }
    )
    django.setup()

from asgiref.sync import async_to_sync  # imported once Django is configured
from celery import Celery
from channels.layers import get_channel_layer

app = Celery(
    "channels_neffos_tests",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ["CELERY_RESULT_BACKEND"],
)


@app.task
def notify(group: str, n: int) -> None:
    """What a task finishing some work does: tell a group of consumers."""
    layer = get_channel_layer()
    async_to_sync(layer.group_send)(group, {"type": "task.done", "n": n, "pid": os.getpid()})


@app.task
def ask(channel: str, n: int) -> Any:
    """Ask a consumer and return its answer."""
    layer = get_channel_layer()
    return async_to_sync(layer.ask)(channel, {"type": "question", "n": n}, timeout=5)
