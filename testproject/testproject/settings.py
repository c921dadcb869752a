"""Settings of the channels_neffos test project: a chat that runs as several daphne instances.

The channel layer comes from the environment:

* ``CHANNEL_LAYER`` — ``nats`` (default), ``redis`` or ``multi`` (both, the migration bridge);
* ``NATS_URL`` (default ``nats://127.0.0.1:4222``) and ``REDIS_URL``
  (default ``redis://127.0.0.1:6379/0``) — where the brokers are;
* ``CHANNEL_PREFIX`` (default ``testproject``) — the layer's prefix on the broker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from channels_neffos.namespaces import history_rooms

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.staticfiles",
    "channels",
    "channels_neffos",  # its system checks: manage.py check
    "chat",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
ASGI_APPLICATION = "testproject.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

STATIC_URL = "static/"
# The neffos.js browser build is installed by npm (testproject/package.json), never vendored.
STATICFILES_DIRS = [("neffos", BASE_DIR / "node_modules" / "neffos.js" / "dist")]

_NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_PREFIX = os.environ.get("CHANNEL_PREFIX", "testproject")
#: The chat's rooms keep history, so a client that reconnects (to any instance) gets what it
#: missed: 1,000 messages for 10 minutes. For the tests: rooms named small-* keep 10, and rooms
#: named plain-* none (they go on working on each instance while the broker is down).
#: CHAT_HISTORY=off in the environment: no history (benchmarks.soak --no-recovery compares).
CHAT_HISTORY = (
    {
        **history_rooms("chat", "small-*", size=10, ttl=600),
        re.compile(r"ns\.chat\.r\.(?!plain-)[A-Za-z0-9_-]*"): {"size": 1000, "ttl": 600},
    }
    if os.environ.get("CHAT_HISTORY", "on") != "off"
    else None
)
_LAYERS = {
    "nats": {
        "BACKEND": "channels_neffos.NatsChannelLayer",
        "CONFIG": {"servers": [_NATS_URL], "history": CHAT_HISTORY},
    },
    "redis": {
        "BACKEND": "channels_neffos.RedisChannelLayer",
        "CONFIG": {"hosts": [_REDIS_URL], "history": CHAT_HISTORY},
    },
}
_CHOICE = os.environ.get("CHANNEL_LAYER", "nats")
if _CHOICE == "multi":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_neffos.MultiChannelLayer",
            "CONFIG": {
                "prefix": _PREFIX,
                # The bridge between brokers carries no history (a group has one order, kept by
                # one broker).
                "layers": [
                    {**layer, "CONFIG": {**layer["CONFIG"], "history": None}}
                    for layer in (_LAYERS["redis"], _LAYERS["nats"])
                ],
            },
        }
    }
elif _CHOICE in _LAYERS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": _LAYERS[_CHOICE]["BACKEND"],
            "CONFIG": {**_LAYERS[_CHOICE]["CONFIG"], "prefix": _PREFIX},
        }
    }
else:
    raise RuntimeError(f"CHANNEL_LAYER must be 'nats', 'redis' or 'multi', not {_CHOICE!r}")

# On SIGTERM an instance drains: its WebSocket clients are closed (code 4012) over this many
# seconds, then it exits (see channels_neffos.namespaces.drain).
NEFFOS_DRAIN_WINDOW = float(os.environ.get("NEFFOS_DRAIN_WINDOW", "2"))
# New WebSocket connections a second an instance takes (see channels_neffos.namespaces.admission);
# unset: no limit. benchmarks.storm sets it.
NEFFOS_ACCEPT_RATE = (
    float(os.environ["NEFFOS_ACCEPT_RATE"]) if "NEFFOS_ACCEPT_RATE" in os.environ else None
)

# Which instance this is, shown on the page (the demo starts "A" and "B").
INSTANCE_NAME = os.environ.get("INSTANCE_NAME", "")
# The WebSocket base URLs of every instance ("ws://host:port", comma-separated): the page
# reconnects to another one if its own goes away. Empty behind a load balancer.
PEERS = [url for url in os.environ.get("CHAT_PEERS", "").split(",") if url]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Not propagated: daphne puts a handler on the root logger, which would print each line twice.
    "loggers": {
        name: {"handlers": ["console"], "level": "INFO", "propagate": False}
        for name in ("channels_neffos", "chat")
    },
}
