"""What travels on the wire between processes: a msgpack array with a version number first.

Layout (version 1)::

    [1, kind, origin_pid, target, body, reply_to, sent_at, exclude]

* ``kind`` — what ``target`` names: ``CHANNEL`` (a channel name), ``GROUP`` (a group name),
  ``CONTROL`` (a channel whose owner must change a group membership; ``body`` is the operation)
  or ``REPLY`` (``target`` is the request id being answered).
* ``origin_pid`` — the sending process, so a process can drop the echo of its own group
  publishes and so a reply can be routed back.
* ``body`` — the user's message, msgpack-encoded *once* by the sender and kept as bytes: mailboxes
  store it undecoded, and every receiver decodes its own private copy.
* ``reply_to`` — a broker subject to answer on, or ``None``.
* ``sent_at`` — wall-clock send time, only for messages that can wait in the broker (worker
  channel lists), so expiry holds there too; ``None`` otherwise.
* ``exclude`` — for group messages, a channel that must not receive this one (the sender's own
  connection in a neffos broadcast); every process applies it to its members. ``None`` otherwise.

A ``REPLY`` body is a msgpack map with exactly one of: ``"r"`` (the reply message), ``"e"`` (an
error text for ``AskError``) or ``"n"`` (the target channel is unknown to its owner: no responders).

Anything that does not decode to this shape is garbage: :func:`decode` raises ``ValueError`` and
the engine logs and drops it. Other languages may join by speaking this format; it is documented
in ``docs/wire.rst``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

VERSION = 1

CHANNEL = 0
GROUP = 1
CONTROL = 2
REPLY = 3
_KINDS = frozenset((CHANNEL, GROUP, CONTROL, REPLY))


class Envelope(NamedTuple):
    kind: int
    origin_pid: str
    target: str
    body: bytes
    reply_to: str | None = None
    sent_at: float | None = None
    exclude: str | None = None


def pack_body(message: dict[str, Any]) -> bytes:
    """Encode a user message. Raises ``TypeError`` naming what msgpack could not encode."""
    try:
        return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"message cannot be sent over a channel layer: {exc}. Messages may contain only "
            f"dict, list, tuple, str, bytes, int, float, bool and None."
        ) from exc


def unpack_body(body: bytes) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def encode(envelope: Envelope | tuple[int, str, str, bytes]) -> bytes:
    """Encode an envelope; a bare ``(kind, origin_pid, target, body)`` leaves the rest unset."""
    if len(envelope) == 4:
        fields: tuple[Any, ...] = (VERSION, *envelope, None, None, None)
    else:
        fields = (VERSION, *envelope)
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> Envelope:
    """Decode bytes from the broker; ``ValueError`` if they are not a version-1 envelope."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ValueError(f"undecodable envelope: {exc}") from exc
    if not isinstance(fields, tuple) or len(fields) != 8 or fields[0] != VERSION:
        raise ValueError("not a version-1 channels_neffos envelope")
    _, kind, origin_pid, target, body, reply_to, sent_at, exclude = fields
    if (
        kind not in _KINDS
        or not isinstance(origin_pid, str)
        or not isinstance(target, str)
        or not isinstance(body, bytes)
    ):
        raise ValueError("malformed channels_neffos envelope")
    return Envelope(kind, origin_pid, target, body, reply_to, sent_at, exclude)


# -- reply bodies --------------------------------------------------------------------------------

REPLY_OK = "r"
REPLY_ERROR = "e"
REPLY_NO_SUCH_CHANNEL = "n"


def pack_reply(kind: str, value: Any) -> bytes:
    return pack_body({kind: value})


def unpack_reply(body: bytes) -> tuple[str, Any]:
    """``(kind, value)`` of a reply body; ``ValueError`` if it is not one."""
    reply = unpack_body(body)
    if not isinstance(reply, dict) or len(reply) != 1:
        raise ValueError("malformed reply")
    ((kind, value),) = reply.items()
    if kind not in (REPLY_OK, REPLY_ERROR, REPLY_NO_SUCH_CHANNEL):
        raise ValueError(f"unknown reply kind {kind!r}")
    return kind, value
