"""The neffos wire format: frames as neffos.js 0.1.34 writes and reads them."""

from __future__ import annotations

import pytest

from channels_neffos.namespaces import protocol
from channels_neffos.namespaces.groups import namespace_group, room_group
from channels_neffos.namespaces.protocol import Message, ProtocolError


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            "$1852000000000458346067;default;;_OnNamespaceConnect;0;0;",
            Message("default", "", "_OnNamespaceConnect", "", "$1852000000000458346067"),
        ),
        (";default;room1;chat;0;0;hi room", Message("default", "room1", "chat", "hi room")),
        (";default;;chat;0;0;Hello; world", Message("default", "", "chat", "Hello; world")),
        (
            ";default;;my@%!semicolon@%!event;0;0;x",
            Message("default", "", "my;event", "x"),
        ),
        (
            "$12345.678;default;;getTime;1;0;not authorized",
            Message("default", "", "getTime", "not authorized", "$12345.678", is_error=True),
        ),
    ],
)
def test_parse_frames_neffos_js_sends(frame: str, expected: Message) -> None:
    assert protocol.parse(frame) == expected
    assert protocol.serialize(expected) == frame


@pytest.mark.parametrize(
    "message",
    [
        Message("chat", "lobby", "chat", '{"text": "a;b;c"}'),
        Message("a;b", "r;o;o;m", "e;v", "body;with;separators"),
        Message("ns", "", "ev", "ünïcødé ✓"),
        Message("ns", "room", "bin", b"\x00;\xff;raw bytes"),
        Message("ns", "", "err", "it failed", "123", is_error=True),
        Message("", "", "", ""),
        Message("ns", "room", "ev", "@%!semicolon@%! in a body stays as it is"),
    ],
)
def test_serialize_parse_round_trip(message: Message) -> None:
    frame = protocol.serialize(message)
    assert isinstance(frame, bytes) == message.binary
    assert protocol.parse(frame) == message


def test_only_names_are_escaped() -> None:
    frame = protocol.serialize(Message("n;s", "r;m", "e;v", "b;y", "w"))
    assert frame == "w;n@%!semicolon@%!s;r@%!semicolon@%!m;e@%!semicolon@%!v;0;0;b;y"


def test_empty_reply_is_the_token_and_six_separators() -> None:
    assert protocol.empty_reply("$99") == "$99;;;;;;"
    assert protocol.parse(protocol.empty_reply("$99")) == Message(wait="$99")


@pytest.mark.parametrize(
    "frame",
    ["", "M", "hello", ";ns;room;event;0;0", b"no separators", b";;;;;", b"\xff\xfe;;;;;;x"],
)
def test_malformed_frames_raise_protocol_error(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse(frame)


def test_answers_and_errors_keep_the_token_and_scope() -> None:
    request = Message("ns", "room", "ask", "question", "$7")
    assert protocol.serialize(request.answer("yes")) == "$7;ns;room;ask;0;0;yes"
    assert protocol.serialize(request.error("no")) == "$7;ns;room;ask;1;0;no"
    assert request.is_client_wait and not Message(wait="123").is_client_wait


def test_group_names_are_readable_when_possible_and_hashed_otherwise() -> None:
    assert namespace_group("chat") == "ns.chat"
    assert room_group("chat", "lobby") == "ns.chat.r.lobby"
    awkward = [
        room_group("chat", "room with spaces"),
        room_group("chat", "x" * 200),
        room_group("chat", "dotted.room"),
        namespace_group(""),
        room_group("ü", "r"),
    ]
    for group in awkward:
        assert group.startswith("nsh.") and len(group) < 100
    assert len(set(awkward)) == len(awkward)
    # A namespace called "a.r.b" and namespace "a" with room "b" do not collide.
    assert namespace_group("a.r.b") != room_group("a", "b")
