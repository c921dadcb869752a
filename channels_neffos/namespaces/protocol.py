"""The neffos wire protocol, as spoken by the ``neffos.js`` client (npm 0.1.34) and Go neffos.

Handshake: the client's first frame is the text ``M``; the server answers ``A<connection id>``
(accepted) or ``H<error text>`` and closes (refused). Nothing may precede that answer.

Every later frame is one message, seven fields joined by ``;``::

    <wait>;<namespace>;<room>;<event>;<isError 0|1>;<isNoOp 0|1>;<body>

Namespace, room and event escape ``;`` as ``@%!semicolon@%!``; the wait token and the body are
never escaped, and the body is everything after the sixth ``;`` (so it may contain ``;``). A binary
frame has the same layout with a byte body. An error is ``isError=1`` with the error text as body.

Wait tokens pair a request with its answer and are opaque: echo them exactly. Client tokens start
with ``$``; the tokens this server generates are plain digits. The built-in requests — namespace
connect/disconnect and room join/leave — always carry one, and are answered with the token plus six
``;`` (success) or the request echoed with ``isError=1`` (refusal).

Native messages: when a server (or neffos.js client) declares the empty namespace ``""`` with an
``_OnNativeMessage`` handler, a frame that is not a neffos message is taken as a *native* message:
event ``_OnNativeMessage`` in namespace ``""``, the whole frame as its body. A native message is
written as its bare body, with no header, so plain WebSocket clients can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ACK_REQUEST = "M"
ACK_ACCEPTED = "A"
ACK_REFUSED = "H"

ON_NAMESPACE_CONNECT = "_OnNamespaceConnect"
ON_NAMESPACE_CONNECTED = "_OnNamespaceConnected"
ON_NAMESPACE_DISCONNECT = "_OnNamespaceDisconnect"
ON_ROOM_JOIN = "_OnRoomJoin"
ON_ROOM_JOINED = "_OnRoomJoined"
ON_ROOM_LEAVE = "_OnRoomLeave"
ON_ROOM_LEFT = "_OnRoomLeft"
ON_ANY_EVENT = "_OnAnyEvent"
ON_NATIVE_MESSAGE = "_OnNativeMessage"

#: Requests that the receiver must answer (they always carry a wait token).
REQUEST_EVENTS = frozenset(
    (ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE)
)

CLIENT_WAIT_PREFIX = "$"

_SEPARATOR = ";"
_SEPARATOR_ESCAPED = "@%!semicolon@%!"
_FIELDS = 7

# Errors whose text the Go server and neffos.js share.
ERR_BAD_NAMESPACE = "bad namespace"
ERR_BAD_ROOM = "bad room"


class ProtocolError(ValueError):
    """A frame that is not a neffos message."""


@dataclass(frozen=True)
class Message:
    """One neffos message. ``body`` is ``str`` for text frames, ``bytes`` for binary frames."""

    namespace: str = ""
    room: str = ""
    event: str = ""
    body: str | bytes = ""
    wait: str = ""
    is_error: bool = False
    is_noop: bool = False

    @property
    def is_native(self) -> bool:
        """A native message: written as its bare body (see the module docstring)."""
        return (
            self.event == ON_NATIVE_MESSAGE
            and not self.namespace
            and not self.wait
            and not self.is_error
        )

    @property
    def binary(self) -> bool:
        return isinstance(self.body, bytes)

    @property
    def is_client_wait(self) -> bool:
        """The client is waiting for the answer to this message (its own ask or request)."""
        return self.wait.startswith(CLIENT_WAIT_PREFIX)

    @property
    def text(self) -> str:
        """The body as text (binary bodies are decoded as UTF-8, invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body

    def answer(self, body: str | bytes) -> Message:
        """This message sent back with a new body: a reply to a wait, or an echo with data."""
        return replace(self, body=body, is_error=False, is_noop=False)

    def error(self, text: str) -> Message:
        """This message sent back as an error with ``text``."""
        return replace(self, body=text, is_error=True, is_noop=False)


def escape(field: str) -> str:
    return field.replace(_SEPARATOR, _SEPARATOR_ESCAPED)


def unescape(field: str) -> str:
    return field.replace(_SEPARATOR_ESCAPED, _SEPARATOR)


def empty_reply(wait: str) -> str:
    """The answer to a request that succeeded: the token and six separators."""
    return wait + _SEPARATOR * (_FIELDS - 1)


def native(body: str | bytes) -> Message:
    """A native message: its frame is ``body`` as it is."""
    return Message(event=ON_NATIVE_MESSAGE, body=body)


def serialize(message: Message) -> str | bytes:
    """The frame for ``message``: ``str`` for a text frame, ``bytes`` for a binary frame."""
    if message.is_native:
        return message.body
    header = _SEPARATOR.join(
        (
            message.wait,
            escape(message.namespace),
            escape(message.room),
            escape(message.event),
            "1" if message.is_error else "0",
            "1" if message.is_noop else "0",
            "",
        )
    )
    if isinstance(message.body, bytes):
        return header.encode() + message.body
    return header + message.body


def parse(frame: str | bytes) -> Message:
    """Parse one frame; ``ProtocolError`` if it does not have the seven fields."""
    if isinstance(frame, bytes):
        header_end = -1
        for _ in range(_FIELDS - 1):
            header_end = frame.find(b";", header_end + 1)
            if header_end < 0:
                raise ProtocolError("not a neffos message: fewer than 7 fields")
        try:
            header = frame[:header_end].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("not a neffos message: header is not UTF-8") from exc
        fields = header.split(_SEPARATOR)
        body: str | bytes = frame[header_end + 1 :]
    else:
        fields = frame.split(_SEPARATOR, _FIELDS - 1)
        if len(fields) != _FIELDS:
            raise ProtocolError("not a neffos message: fewer than 7 fields")
        body = fields.pop()
    wait, namespace, room, event, is_error, is_noop = fields
    return Message(
        namespace=unescape(namespace),
        room=unescape(room),
        event=unescape(event),
        body=body,
        wait=wait,
        is_error=is_error == "1",
        is_noop=is_noop == "1",
    )
