"""The soak benchmark's Django settings: testproject's, with levels and times in the log lines.

testproject prints its log records as bare messages; the soak driver counts warnings and errors
in the servers' output and places them in time, so here every handler of testproject's logging
configuration gets a format with the time, level and logger. Nothing else differs from the chat
the demo runs, but the time zone: UTC, so that the driver can read the log lines' times (Django
sets the process's ``TZ`` from ``TIME_ZONE``, which testproject leaves at America/Chicago).
"""

from __future__ import annotations

from testproject.settings import *  # noqa: F403  (the soak runs testproject as it is)
from testproject.settings import LOGGING as _TESTPROJECT_LOGGING

TIME_ZONE = "UTC"

LOGGING = {
    **_TESTPROJECT_LOGGING,
    "formatters": {"timed": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        name: {**handler, "formatter": "timed"}
        for name, handler in _TESTPROJECT_LOGGING["handlers"].items()
    },
}
