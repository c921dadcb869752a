"""Fuzz target: bytes from the broker into the envelope decoder (:mod:`channels_neffos.envelope`).

Checks, for any input:

* ``decode`` and ``decode_frame`` return envelopes or raise ``ValueError`` (the documented
  "garbage": counted and dropped by the engine) — any other exception is a crash;
* whatever they accept has the documented field types (int kind in 0-3, str pid and target,
  bytes body, str-or-None ``reply_to``/``exclude``, finite-number-or-None ``sent_at``) and
  encodes back to bytes that decode to the same envelopes;
* ``unpack_body``, ``unpack_reply`` and ``unpack_control`` (the decoders of what an envelope
  carries) return or raise ``ValueError``.

Run: ``.venv/bin/python fuzz/fuzz_envelope.py fuzz/corpus/envelope -max_total_time=60``.
"""

from __future__ import annotations

import math
import sys

import atheris

with atheris.instrument_imports(include=["channels_neffos"]):
    from channels_neffos import envelope


def check_envelope(decoded: envelope.Envelope) -> None:
    if not (
        type(decoded.kind) is int
        and decoded.kind in (envelope.CHANNEL, envelope.GROUP, envelope.CONTROL, envelope.REPLY)
        and type(decoded.origin_pid) is str
        and type(decoded.target) is str
        and type(decoded.body) is bytes
        and (decoded.reply_to is None or type(decoded.reply_to) is str)
        and (decoded.exclude is None or type(decoded.exclude) is str)
        and (
            decoded.sent_at is None
            or (type(decoded.sent_at) in (int, float) and math.isfinite(decoded.sent_at))
        )
    ):
        raise AssertionError(f"decode accepted a malformed envelope: {decoded!r}")


def TestOneInput(data: bytes) -> None:
    try:
        single = envelope.decode(data)
    except ValueError:
        pass
    else:
        check_envelope(single)
        if envelope.decode(envelope.encode(single)) != single:
            raise AssertionError(f"{single!r} does not survive re-encoding")
    try:
        decoded = envelope.decode_frame(data)
    except ValueError:
        pass
    else:
        for message in decoded:
            check_envelope(message)
        again = envelope.decode_frame(envelope.frame([envelope.encode(m) for m in decoded]))
        if again != decoded:
            raise AssertionError(f"{decoded!r} does not survive re-encoding")
    for unpack in (envelope.unpack_body, envelope.unpack_reply, envelope.unpack_control):
        try:
            unpack(data)
        except ValueError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
