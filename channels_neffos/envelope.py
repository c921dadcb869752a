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

Several envelopes for one subject may travel as one broker message, a *frame*: a msgpack array
of envelopes (:func:`frame`; built by :mod:`channels_neffos._core.outbox`). A receiver tells the
two apart by the first element — the version number of an envelope, an array in a frame — and
:func:`decode_frame` accepts both. Worker-channel queues always hold single envelopes.

A ``REPLY`` body is a msgpack map with exactly one of: ``"r"`` (the reply message), ``"e"`` (an
error text for ``AskError``) or ``"n"`` (the target channel is unknown to its owner: no responders).

Anything that does not decode to this shape is garbage: :func:`decode` raises ``ValueError`` and
the receiving router logs and drops it (counted as ``garbage``). Other languages may join by
speaking this format; it is documented in ``docs/wire.rst``.
"""

from __future__ import annotations

import math
import threading
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


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's reusable packer: ``msgpack.packb`` builds a new one per call, which costs
    more than packing a small message. One per thread, as a packer has a buffer of its own."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


#: Builds an Envelope from a tuple of its fields without NamedTuple's per-field call overhead.
_new_envelope = tuple.__new__


def pack_body(message: dict[str, Any]) -> bytes:
    """Encode a user message. Raises ``TypeError`` naming what msgpack could not encode."""
    try:
        return _packer().pack(message)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"message cannot be sent over a channel layer: {exc}. Messages may contain only "
            f"dict, list, tuple, str, bytes, int, float, bool and None."
        ) from exc


def unpack_body(body: bytes) -> dict[str, Any]:
    """Decode a user message; ``ValueError`` if ``body`` is not msgpack."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)  # type: ignore[no-any-return]
    except ValueError:
        raise
    except Exception as exc:  # e.g. TypeError for a map keyed by an array
        raise ValueError(f"undecodable message body: {exc}") from exc


def encode(envelope: Envelope) -> bytes:
    """Encode one envelope (hot paths complete a cached :func:`header` instead)."""
    return _packer().pack((VERSION, *envelope))  # type: ignore[no-any-return]


def header(kind: int, origin_pid: str, target: str) -> bytes:
    """The encoded start of an envelope with no ``reply_to``, ``sent_at`` or ``exclude``.

    A process sends to the same few targets over and over; it keeps the header and completes it
    per message with :func:`with_body`, which costs a fraction of encoding the whole envelope.
    """
    # Four trailing nils (one byte each) stand for the body and the unset fields.
    encoded: bytes = _packer().pack((VERSION, kind, origin_pid, target, None, None, None, None))
    return encoded[:-4]


def with_body(header: bytes, body: bytes) -> bytes:
    """The envelope :func:`header` began, carrying ``body``: equal to :func:`encode`'s bytes."""
    size = len(body)
    if size < 0x100:
        length = b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        length = b"\xc5" + size.to_bytes(2, "big")
    else:
        length = b"\xc6" + size.to_bytes(4, "big")
    return b"".join((header, length, body, b"\xc0\xc0\xc0"))


def frame(payloads: list[bytes]) -> bytes:
    """One broker message carrying encoded envelopes: the bare envelope if there is one."""
    count = len(payloads)
    if count == 1:
        return payloads[0]
    # A msgpack array header followed by the already-encoded elements is that array, encoded.
    return _header(count, 0x90, b"\xdc", b"\xdd") + b"".join(payloads)


def _header(count: int, fixed: int, code16: bytes, code32: bytes) -> bytes:
    """The msgpack header of an array (``0x90, dc, dd``) or map (``0x80, de, df``) of
    ``count`` elements."""
    if count < 16:
        return bytes((fixed | count,))
    if count < 0x10000:
        return code16 + count.to_bytes(2, "big")
    return code32 + count.to_bytes(4, "big")


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ValueError(f"undecodable envelope: {exc}") from exc


def _is_time(value: Any) -> bool:
    return type(value) in (float, int) and math.isfinite(value)


def _envelope(fields: Any) -> Envelope:
    # Exact type checks: msgpack makes exactly these types, and they are cheaper than isinstance.
    if type(fields) is not tuple or len(fields) != 8 or fields[0] != VERSION:
        raise ValueError("not a version-1 channels_neffos envelope")
    if (
        type(fields[1]) is not int  # first: a map or an array is not hashable
        or fields[1] not in _KINDS
        or type(fields[2]) is not str
        or type(fields[3]) is not str
        or type(fields[4]) is not bytes
        or (fields[5] is not None and type(fields[5]) is not str)
        or (fields[6] is not None and not _is_time(fields[6]))
        or (fields[7] is not None and type(fields[7]) is not str)
    ):
        raise ValueError("malformed channels_neffos envelope")
    return _new_envelope(Envelope, fields[1:])


def decode(data: bytes) -> Envelope:
    """Decode one envelope; ``ValueError`` if ``data`` is not a version-1 envelope."""
    return _envelope(_unpack(data))


def decode_frame(data: bytes) -> list[Envelope]:
    """Decode a broker message: one envelope or a frame of several, in order.

    ``ValueError`` if it is neither; a frame with one bad envelope is refused whole.
    """
    fields = _unpack(data)
    if isinstance(fields, tuple) and fields and isinstance(fields[0], tuple):
        return [_envelope(element) for element in fields]
    return [_envelope(fields)]


# -- positions (history groups) -----------------------------------------------------------------

#: The key under which a member of a history group receives a message's position.
POSITION_KEY = "__position__"


def with_position(body: bytes, epoch: str, offset: int, gap: bool = False) -> bytes:
    """``body`` (a msgpack map) with ``"__position__": {"epoch": epoch, "offset": offset}``
    added — and ``"gap": True`` in it when messages before this one were lost. Done on the
    bytes: the map's header counts one more entry and the entry goes at the end, so the body is
    not decoded. ``ValueError`` if ``body`` is not a msgpack map."""
    first = body[0] if body else 0
    if 0x80 <= first <= 0x8F:
        count, rest = first & 0x0F, body[1:]
    elif first == 0xDE:
        count, rest = int.from_bytes(body[1:3], "big"), body[3:]
    elif first == 0xDF:
        count, rest = int.from_bytes(body[1:5], "big"), body[5:]
    else:
        raise ValueError("a message body is not a msgpack map")
    head = _header(count + 1, 0x80, b"\xde", b"\xdf")
    position: dict[str, Any] = {"epoch": epoch, "offset": offset}
    if gap:
        position["gap"] = True
    return b"".join((head, rest, _packer().pack(POSITION_KEY), _packer().pack(position)))


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


# -- membership-change bodies --------------------------------------------------------------------

#: Changes of a channel's membership, and (target "") presence questions to a whole process.
CONTROL_OPS = ("group_add", "group_discard", "group_members", "group_size", "process_stats")


def unpack_control(body: bytes) -> tuple[str, str]:
    """``(op, group)`` of a ``CONTROL`` body; ``ValueError`` if it is not one."""
    operation = unpack_body(body)
    if not isinstance(operation, dict):
        raise ValueError("malformed membership change")
    op, group = operation.get("op"), operation.get("group")
    if op not in CONTROL_OPS or type(group) is not str:
        raise ValueError(f"malformed membership change {op!r} of {group!r}")
    return op, group
