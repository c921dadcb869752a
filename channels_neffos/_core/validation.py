"""The checks every layer applies to its options, its messages and the names it is given.

Real exceptions with messages that say what to fix (never ``assert``, which ``python -O``
removes). Names follow Channels' rules — its patterns, matched in full, its length limit and its
wording — so a name one layer accepts, every layer accepts. A *process channel* (a name with
``!``, from ``new_channel()``) carries the 12-hex-digit pid of the process that owns it,
right before the ``!``: that is how every process knows where to send it.
"""

from __future__ import annotations

import re
from typing import Any

PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")
# Channels' own patterns, matched in full: ``re.match(... $)`` would accept a trailing newline.
CHANNEL_RE = re.compile(r"[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?")
GROUP_RE = re.compile(r"[a-zA-Z\d\-_.]+")
#: Channels' limit: names are shorter than this.
MAX_NAME_LENGTH = 100
#: Channels' wording (``BaseChannelLayer.invalid_name_error``), "Channel" or "Group" first.
INVALID_NAME = (
    "{} name must be a valid unicode string with length < 100 containing only ASCII "
    "alphanumerics, hyphens, underscores, or periods."
)
#: Keys a message may not carry: Channels reserves the first, asks (see .asks) the second.
RESERVED_KEYS = ("__asgi_channel__", "__neffos_ask__")

_PID_RE = re.compile(r"[0-9a-f]{12}")


def check_channel_name(name: Any) -> None:
    if not isinstance(name, str) or len(name) >= MAX_NAME_LENGTH or not CHANNEL_RE.fullmatch(name):
        raise TypeError(INVALID_NAME.format("Channel"))


def check_group_name(name: Any) -> None:
    if not isinstance(name, str) or len(name) >= MAX_NAME_LENGTH or not GROUP_RE.fullmatch(name):
        raise TypeError(INVALID_NAME.format("Group"))


def check_message(message: Any) -> None:
    """``TypeError`` for a message that is not a dict, ``ValueError`` for a reserved key."""
    if not isinstance(message, dict):
        raise TypeError(f"message must be a dict, not {type(message).__name__}")
    for key in RESERVED_KEYS:
        if key in message:
            raise ValueError(f"message must not contain the reserved key {key!r}")


def owner_pid(channel: str) -> str | None:
    """The pid a process channel name carries, or ``None`` if it carries none we made."""
    bang = channel.find("!")
    pid = channel[bang - 12 : bang]
    if bang > 12 and channel[bang - 13] == "." and _PID_RE.fullmatch(pid):
        return pid
    return None


def process_channel_owner(channel: str) -> str:
    """:func:`owner_pid`, or ``ValueError`` with advice for a ``!`` name we did not make."""
    pid = owner_pid(channel)
    if pid is None:
        raise ValueError(
            f"{channel!r} is not a process-specific channel of this layer: names with '!' "
            f"must come from this layer's new_channel()"
        )
    return pid


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
