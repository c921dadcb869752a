"""Django settings of the benchmark's Channels apps (see apps.py).

The channel layer comes from ``BENCH_E2E_LAYER``: JSON ``{"BACKEND": ..., "CONFIG": {...}}``,
exactly what goes into ``CHANNEL_LAYERS["default"]`` — written by the driver (runner.py).
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "benchmarks-e2e-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

CHANNEL_LAYERS = {"default": json.loads(os.environ["BENCH_E2E_LAYER"])}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Drops (full channels, expiry) are logged by the layers at WARNING: they show in the logs.
    "root": {"handlers": ["console"], "level": "WARNING"},
}
