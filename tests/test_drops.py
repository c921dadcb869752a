"""Rate-limited logging of drops: the first at once, then one line per interval with a count."""

from __future__ import annotations

import logging
import time

import pytest

from channels_neffos._drops import RateLimitedLog


def test_a_flood_logs_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RateLimitedLog(logging.getLogger("flood"), logging.INFO, interval=0.2)
    with caplog.at_level(logging.INFO, logger="flood"):
        for n in range(1000):
            log("bad", "%d bad frame(s) (latest: %s)", n)
        log("other", "%d other(s)")  # kinds are limited separately
        time.sleep(0.25)
        log("bad", "%d bad frame(s) (latest: %s)", "last", count=2)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["1 bad frame(s) (latest: 0)", "1 other(s)", "1001 bad frame(s) (latest: last)"]
