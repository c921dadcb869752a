"""The checks every layer applies to its options and to the names it is given.

Real exceptions with messages that say what to fix (never ``assert``, which ``python -O``
removes); the name patterns are Channels' own, matched in full.
"""

from __future__ import annotations

import re
from typing import Any

PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")
# Channels' own patterns, matched in full: ``re.match(... $)`` would accept a trailing newline.
CHANNEL_RE = re.compile(r"[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?")
GROUP_RE = re.compile(r"[a-zA-Z\d\-_.]+")


def positive_number(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise TypeError(f"{name} must be a positive number of seconds, got {value!r}")
    return value


def check_capacity(capacity: Any) -> None:
    if capacity is not None and (
        isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1
    ):
        raise TypeError(f"capacity must be a positive integer or None, got {capacity!r}")
