"""Property-based tests (hypothesis) of the two wire parsers: broker envelopes and neffos frames.

* :mod:`channels_neffos.envelope` — every valid envelope (and frame of envelopes) survives
  encode/decode unchanged, :func:`~channels_neffos.envelope.header` + ``with_body`` equals
  ``encode``; arbitrary bytes, and arbitrary msgpack values shaped almost like an envelope, make
  ``decode``/``decode_frame``/``unpack_*`` raise ``ValueError`` (the documented "garbage" error
  the engine counts and drops) and nothing else. Whatever decodes has the documented field types.
* :mod:`channels_neffos.namespaces.protocol` — serialize→parse is the identity for any
  namespace, room, event and body (separators, escape-like text, control characters, bytes),
  except the documented neffos limits (``@%!`` inside names, ``;`` in a wait token, native
  messages); arbitrary text and bytes make ``parse`` raise ``ProtocolError`` only, and whatever
  parses re-serializes to a frame that parses to the same message (so the server can forward
  what it received without changing it).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels_neffos import envelope
from channels_neffos.envelope import Envelope
from channels_neffos.namespaces import protocol
from channels_neffos.namespaces.protocol import Message, ProtocolError

# A deadline catches a parser that hangs or goes quadratic; generous for two noisy cores.
FAST = settings(max_examples=300, deadline=timedelta(seconds=2))
MANY = settings(
    max_examples=500, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies ------------------------------------------------------------------------------

#: Text biased towards what parsers trip on: separators, escape fragments, NUL, non-ASCII.
#: Only what UTF-8 can carry: no lone surrogates, which no WebSocket text (and no parse of
#: bytes) produces; a server that put one in a name could not send it anywhere.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from([";", "@", "%", "!", "$", "\x00", "\n", "0", "1", "é", "✓", "\U0001f600"]),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
tricky_words = st.lists(
    st.sampled_from([";", "@%!semicolon@%!", "@%!", "semicolon", "_OnNativeMessage", "M", "a"]),
    max_size=8,
).map("".join)
names = st.one_of(tricky_text, tricky_words)

envelopes = st.builds(
    Envelope,
    kind=st.sampled_from([envelope.CHANNEL, envelope.GROUP, envelope.CONTROL, envelope.REPLY]),
    origin_pid=st.text(max_size=20),
    target=st.text(max_size=120),
    body=st.binary(max_size=300),
    reply_to=st.none() | st.text(max_size=60),
    sent_at=st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40),
    exclude=st.none() | st.text(max_size=60),
)

#: Any value msgpack can carry (use_list=False on decode turns arrays into tuples).
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=9)
        | st.dictionaries(st.text(max_size=5) | st.integers(-(2**63), 2**64 - 1), inner, max_size=3)
    ),
    max_leaves=20,
)


@st.composite
def almost_envelopes(draw: st.DrawFn) -> bytes:
    """An eight-element array that starts like an envelope, with any field replaced by junk."""
    fields: list[Any] = [
        1,
        draw(st.sampled_from([0, 1, 2, 3])),
        "0123456789ab",
        "target",
        b"\x80",
        None,
        None,
        None,
    ]
    for index in draw(st.lists(st.integers(0, 7), max_size=3)):
        fields[index] = draw(msgpack_values)
    if draw(st.booleans()):  # sometimes a frame of several
        return bytes(msgpack.packb([fields, fields], use_bin_type=True))
    return bytes(msgpack.packb(fields, use_bin_type=True))


def assert_well_typed(decoded: Envelope) -> None:
    """What the engine relies on once ``decode`` accepted something."""
    assert type(decoded.kind) is int and decoded.kind in (0, 1, 2, 3)
    assert type(decoded.origin_pid) is str and type(decoded.target) is str
    assert type(decoded.body) is bytes
    assert decoded.reply_to is None or type(decoded.reply_to) is str
    assert decoded.exclude is None or type(decoded.exclude) is str
    if decoded.sent_at is not None:
        assert type(decoded.sent_at) in (int, float) and math.isfinite(decoded.sent_at)


# -- envelopes -------------------------------------------------------------------------------


@FAST
@given(envelopes)
def test_every_valid_envelope_round_trips(message: Envelope) -> None:
    encoded = envelope.encode(message)
    assert envelope.decode(encoded) == message
    assert envelope.decode_frame(encoded) == [message]


@FAST
@given(
    st.sampled_from([0, 1, 2, 3]),
    st.text(max_size=20),
    st.text(max_size=80),
    # bodies on both sides of each length-prefix boundary (bin 8, bin 16, bin 32)
    st.binary(max_size=300) | st.sampled_from([0xFF, 0x100, 0xFFFF, 0x10000]).map(bytes),
)
def test_header_with_body_equals_encode(kind: int, pid: str, target: str, body: bytes) -> None:
    encoded = envelope.with_body(envelope.header(kind, pid, target), body)
    assert encoded == envelope.encode(Envelope(kind, pid, target, body))
    assert envelope.decode(encoded) == Envelope(kind, pid, target, body)


@FAST
@given(st.lists(envelopes, min_size=1, max_size=20))
def test_frames_round_trip_in_order(messages: list[Envelope]) -> None:
    frame = envelope.frame([envelope.encode(m) for m in messages])
    assert envelope.decode_frame(frame) == messages


@MANY
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xc1")  # the one byte msgpack never uses
@example(b"\xdd\xff\xff\xff\xff")  # an array that claims 4 G elements
@example(b"\x91" * 5000)  # nested deeper than msgpack's stack
def test_arbitrary_bytes_decode_or_raise_value_error(data: bytes) -> None:
    for decode in (envelope.decode, envelope.decode_frame):
        try:
            result = decode(data)
        except ValueError:
            continue
        for decoded in result if isinstance(result, list) else [result]:
            assert_well_typed(decoded)


@FAST
@given(almost_envelopes())
@example(msgpack.packb([1, {}, "p", "t", b"", None, None, None]))  # unhashable kind (was TypeError)
@example(msgpack.packb([1, 0, "p", "t", b"", None, "yesterday", None]))  # sent_at a string
@example(msgpack.packb([1, 0, "p", "t", b"", 7, None, None]))  # reply_to a number
@example(msgpack.packb([1, 1, "p", "t", b"", None, None, [1]]))  # exclude an array
@example(msgpack.packb([1, 0, "p", "t", b"", None, float("nan"), None]))
def test_almost_envelopes_decode_well_typed_or_raise_value_error(data: bytes) -> None:
    try:
        decoded = envelope.decode_frame(data)
    except ValueError:
        return
    for message in decoded:
        assert_well_typed(message)


@pytest.mark.parametrize(
    "fields",
    [
        [1, {}, "p", "t", b"", None, None, None],
        [1, 0, "p", "t", b"", None, "yesterday", None],
        [1, 0, "p", "t", b"", 7, None, None],
        [1, 1, "p", "t", b"", None, None, [1]],
        [1, 0, "p", "t", b"", None, float("inf"), None],
    ],
)
def test_wrongly_typed_fields_are_garbage(fields: list[Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        envelope.decode(msgpack.packb(fields, use_bin_type=True))


@MANY
@given(st.binary(max_size=100) | msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
@example(b"\x81\x91\x01\x01")  # a map keyed by an array: TypeError inside msgpack
def test_bodies_replies_and_controls_decode_or_raise_value_error(data: bytes) -> None:
    for unpack in (envelope.unpack_body, envelope.unpack_reply, envelope.unpack_control):
        try:
            unpack(data)
        except ValueError:
            pass


@FAST
@given(st.sampled_from(envelope.CONTROL_OPS), st.text(max_size=50))
def test_control_bodies_round_trip(op: str, group: str) -> None:
    assert envelope.unpack_control(envelope.pack_body({"op": op, "group": group})) == (op, group)


@FAST
@given(st.sampled_from("ren"), msgpack_values)
def test_reply_bodies_round_trip(kind: str, value: Any) -> None:
    decoded_kind, decoded = envelope.unpack_reply(envelope.pack_reply(kind, value))
    assert decoded_kind == kind
    assert msgpack.packb(decoded) == msgpack.packb(value)  # equal, NaN included


# -- neffos frames ---------------------------------------------------------------------------


def _round_trippable(message: Message) -> bool:
    """Outside these, neffos itself (Go and neffos.js alike) cannot carry a message unchanged:
    the escape is a plain replace, so a name containing ``@%!`` may read back differently; the
    wait token is never escaped; a native message is written as its bare body."""
    names_ok = all("@%!" not in name for name in (message.namespace, message.room, message.event))
    return names_ok and ";" not in message.wait and not message.is_native


messages = st.builds(
    Message,
    namespace=names,
    room=names,
    event=names,
    body=tricky_text | st.binary(max_size=60) | tricky_words,
    wait=st.sampled_from(["", "$1", "$12345.678", "17000000000001"]) | tricky_text,
    is_error=st.booleans(),
    is_noop=st.booleans(),
).filter(_round_trippable)


@MANY
@given(messages)
@example(Message("a;b", "r;o;o;m", "e;v", "b;o;d;y", "$1"))
@example(Message("", "", "", b"\xff;\x00;", ""))
@example(Message("ns", "", "ev", "", "", is_error=True, is_noop=True))
def test_serialize_parse_round_trip(message: Message) -> None:
    frame = protocol.serialize(message)
    assert isinstance(frame, bytes) == message.binary
    assert protocol.parse(frame) == message


def test_names_with_the_escape_text_do_not_round_trip_as_in_neffos() -> None:
    """The documented limit the round trip above leaves out (neffos.js behaves the same)."""
    message = Message("@%!semicolon;", "", "ev", "x")
    assert protocol.parse(protocol.serialize(message)).namespace == ";semicolon@%!"


def _parse_forward_and_reparse(frame: str | bytes) -> None:
    try:
        message = protocol.parse(frame)
    except ProtocolError:
        return
    assert isinstance(message.body, type(frame))
    assert all(isinstance(f, str) for f in (message.namespace, message.room, message.event))
    if not message.is_native:
        assert protocol.parse(protocol.serialize(message)) == message


@MANY
@given(tricky_text | tricky_words)
@example(";;;;;;")
@example("$1;@%!semicolon@%!semicolon@%!;;;0;0;x")
@example(";;;_OnNativeMessage;0;0;native")
def test_arbitrary_text_parses_or_raises_protocol_error(frame: str) -> None:
    _parse_forward_and_reparse(frame)


@MANY
@given(st.binary(max_size=120) | tricky_words.map(str.encode))
@example(b"\xff\xfe;;;;;;x")
@example(b";;;;;;\xff")
@example(b"\xed\xa0\x80;;;;;;x")  # a UTF-8-encoded surrogate in the header
def test_arbitrary_bytes_parse_or_raise_protocol_error(frame: bytes) -> None:
    _parse_forward_and_reparse(frame)


@FAST
@given(st.text(max_size=20_000))
def test_long_frames_parse_in_bounded_time(filler: str) -> None:
    _parse_forward_and_reparse(filler)
    _parse_forward_and_reparse(";" * 6 + filler)
    _parse_forward_and_reparse(filler.encode() + b";" * 5)
