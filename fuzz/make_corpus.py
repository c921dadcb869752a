"""Write the seed corpus ``fuzz/corpus/<target>/`` from real messages made by the real encoders.

Run from the repository root: ``.venv/bin/python fuzz/make_corpus.py``. The files are committed;
rerun after a wire-format change. Files named ``regress-*`` are inputs that once crashed a
target: they stay in the corpus so every run (and ``tests/test_fuzz_targets.py``) replays them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
from fuzz_process import CHANNEL, GROUP, OTHER_PID, PID, REPLY_TO, WORKER_CHANNEL

from channels_neffos import envelope
from channels_neffos.envelope import CHANNEL as KIND_CHANNEL
from channels_neffos.envelope import CONTROL, REPLY, Envelope
from channels_neffos.envelope import GROUP as KIND_GROUP
from channels_neffos.namespaces import protocol
from channels_neffos.namespaces.protocol import Message

CORPUS = Path(__file__).resolve().parent / "corpus"


def _raw(*fields: object) -> bytes:
    """An envelope-shaped msgpack array, for inputs the real encoder would never make."""
    return bytes(msgpack.packb(list(fields), use_bin_type=True))


def envelope_seeds() -> dict[str, bytes]:
    body = envelope.pack_body({"type": "chat.message", "text": "hello", "n": 1, "b": b"\x00"})
    control = envelope.pack_body({"op": "group_add", "group": "room"})
    seeds = {
        "channel": envelope.encode(Envelope(KIND_CHANNEL, PID, "specific.x!y", body)),
        "group-exclude": envelope.encode(Envelope(KIND_GROUP, PID, "room", body, exclude="a!b")),
        "worker-sent-at": envelope.encode(Envelope(KIND_CHANNEL, PID, "tasks", body, None, 1e9)),
        "ask": envelope.encode(Envelope(KIND_CHANNEL, PID, "specific.x!y", body, "P:r:1")),
        "control": envelope.encode(Envelope(CONTROL, PID, "specific.x!y", control, "P:r:2")),
        "reply": envelope.encode(Envelope(REPLY, PID, "P:r:1", envelope.pack_reply("r", {}))),
        "header-with-body": envelope.with_body(
            envelope.header(KIND_GROUP, PID, "room"), b"\x01" * 300
        ),
        "frame-2": envelope.frame([envelope.encode(Envelope(KIND_CHANNEL, PID, "a!b", body))] * 2),
        "frame-17": envelope.frame([envelope.encode(Envelope(KIND_GROUP, PID, "g", b""))] * 17),
        "body": body,
        "reply-error": envelope.pack_reply("e", "it failed"),
        "reply-none": envelope.pack_reply("n", "specific.x!y"),
        "control-body": control,
        "regress-unhashable-kind": _raw(1, {}, PID, "t", b"", None, None, None),
        "regress-sent-at-text": _raw(1, 0, PID, "tasks", b"\x80", None, "yesterday", None),
        "regress-map-keyed-by-array": b"\x81\x91\x01\x01",
    }
    return seeds


def protocol_seeds() -> dict[str, bytes]:
    def frame(message: Message) -> bytes:
        serialized = protocol.serialize(message)
        return serialized if isinstance(serialized, bytes) else serialized.encode()

    return {
        "handshake": protocol.ACK_REQUEST.encode(),
        "accepted": (protocol.ACK_ACCEPTED + "specific.abc!def").encode(),
        "connect": frame(Message("chat", "", protocol.ON_NAMESPACE_CONNECT, wait="$1")),
        "join": frame(Message("chat", "lobby", protocol.ON_ROOM_JOIN, wait="$2")),
        "leave": frame(Message("chat", "lobby", protocol.ON_ROOM_LEAVE, wait="$3")),
        "event": frame(Message("chat", "lobby", "chat", '{"text": "a;b"}')),
        "escaped-names": frame(Message("n;s", "r;m", "e;v", "b;o;d;y", "$4")),
        "error": frame(Message("chat", "", "whoami", "bad namespace", "$5", is_error=True)),
        "noop": frame(Message("chat", "", "ping", "", "17000000000001", is_noop=True)),
        "binary": frame(Message("chat", "lobby", "bin", b"\x00;\xff\xfe")),
        "empty-reply": protocol.empty_reply("$6").encode(),
        "native": frame(protocol.native("plain text")),
        "native-header": frame(Message("", "", protocol.ON_NATIVE_MESSAGE, "x", "$7")),
    }


def process_seeds() -> dict[str, bytes]:
    body = envelope.pack_body({"type": "chat.message", "text": "hello"})
    own_inbox = f"fuzz:{OTHER_PID}:r:00aa"
    add = envelope.pack_body({"op": "group_add", "group": "room2"})
    discard = envelope.pack_body({"op": "group_discard", "group": GROUP})
    to_channel = envelope.encode(Envelope(KIND_CHANNEL, OTHER_PID, CHANNEL, body))
    return {
        "channel": to_channel,
        "channel-frame-full": envelope.frame([to_channel] * 3),  # capacity 1: two are dropped
        "ask": envelope.encode(Envelope(KIND_CHANNEL, OTHER_PID, CHANNEL, body, own_inbox)),
        "ask-unknown-channel": envelope.encode(
            Envelope(KIND_CHANNEL, OTHER_PID, "specific.nobody!here", body, own_inbox)
        ),
        "group": envelope.encode(Envelope(KIND_GROUP, OTHER_PID, GROUP, body)),
        "group-excluding-member": envelope.encode(
            Envelope(KIND_GROUP, OTHER_PID, GROUP, body, exclude=CHANNEL)
        ),
        "group-own-echo": envelope.encode(Envelope(KIND_GROUP, PID, GROUP, body)),
        "control-add": envelope.encode(Envelope(CONTROL, OTHER_PID, CHANNEL, add, own_inbox)),
        "control-discard": envelope.encode(Envelope(CONTROL, PID, CHANNEL, discard, REPLY_TO)),
        "control-unknown-channel": envelope.encode(
            Envelope(CONTROL, OTHER_PID, "specific.gone!x", add, own_inbox)
        ),
        "reply": envelope.encode(
            Envelope(REPLY, OTHER_PID, REPLY_TO, envelope.pack_reply("r", {"ok": True}))
        ),
        "reply-late": envelope.encode(
            Envelope(REPLY, OTHER_PID, "fuzz:x:r:late", envelope.pack_reply("e", "no"))
        ),
        "worker": envelope.encode(
            Envelope(KIND_CHANNEL, OTHER_PID, WORKER_CHANNEL, body, None, 4e9)
        ),
        "worker-expired": envelope.encode(
            Envelope(KIND_CHANNEL, OTHER_PID, WORKER_CHANNEL, body, None, 1.0)
        ),
        "regress-control-body-array": envelope.encode(
            Envelope(CONTROL, OTHER_PID, CHANNEL, b"\x90", own_inbox)
        ),
        "regress-control-body-map-keyed-by-array": envelope.encode(
            Envelope(CONTROL, OTHER_PID, CHANNEL, b"\x81\x91\x01\x01")
        ),
        "regress-control-group-not-text": envelope.encode(
            Envelope(
                CONTROL, OTHER_PID, CHANNEL, envelope.pack_body({"op": "group_add", "group": [1]})
            )
        ),
        "regress-worker-sent-at-text": _raw(
            1, 0, OTHER_PID, WORKER_CHANNEL, body, None, "yesterday", None
        ),
        "regress-unhashable-kind": _raw(1, [0], OTHER_PID, CHANNEL, body, None, None, None),
        "regress-reply-body-map-keyed-by-array": envelope.encode(
            Envelope(REPLY, OTHER_PID, REPLY_TO, b"\x81\x91\x01\x01")
        ),
    }


def main() -> None:
    for target, seeds in (
        ("envelope", envelope_seeds()),
        ("protocol", protocol_seeds()),
        ("process", process_seeds()),
    ):
        directory = CORPUS / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        print(f"{directory}: {len(seeds)} files")


if __name__ == "__main__":
    main()
