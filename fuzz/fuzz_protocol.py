"""Fuzz target: WebSocket frames into the neffos parser (``namespaces/protocol.py``).

The input is tried as a binary frame and, when it is valid UTF-8 (as every text frame is), as a
text frame. Checks, for any input:

* ``parse`` returns a :class:`Message` or raises ``ProtocolError`` (which the consumer answers
  with an ``invalid payload`` error frame) — any other exception is a crash;
* a parsed message has ``str`` names and a body of the frame's type (``bytes`` for a binary
  frame, ``str`` for a text frame);
* unless it is a native message (written as its bare body by design), re-serializing it gives
  a frame of the same type that parses to the same message: the server can forward what it got.

Run: ``.venv/bin/python fuzz/fuzz_protocol.py fuzz/corpus/protocol -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["channels_neffos"]):
    from channels_neffos.namespaces import protocol


def check_frame(frame: str | bytes) -> None:
    try:
        message = protocol.parse(frame)
    except protocol.ProtocolError:
        return
    if not isinstance(message.body, type(frame)):
        raise AssertionError(f"{frame!r} parsed to a body of another type: {message!r}")
    if not all(isinstance(name, str) for name in (message.namespace, message.room, message.event)):
        raise AssertionError(f"{frame!r} parsed to non-text names: {message!r}")
    if message.is_native:
        return
    again = protocol.serialize(message)
    if type(again) is not type(frame) or protocol.parse(again) != message:
        raise AssertionError(f"{frame!r} -> {message!r} -> {again!r} does not read back the same")


def TestOneInput(data: bytes) -> None:
    check_frame(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    check_frame(text)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
