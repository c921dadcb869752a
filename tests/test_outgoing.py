"""A connection's outgoing buffer: order, close after frames, bounds, and daphne's flow control.

The ASGI ``send`` here is a coroutine that waits on a gate, as uvicorn's waits while a client does
not read; the end-to-end tests (tests/e2e/test_fanout.py) do the same with real servers.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from channels_neffos.namespaces import counters
from channels_neffos.namespaces.outgoing import CLOSE_SLOW_CLIENT, Outgoing, State


class GatedServer:
    """An ASGI ``send`` that takes messages only while its gate is open."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self._changed = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.gate.wait()
        self.sent.append(message)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.sent) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 2)


@pytest.mark.asyncio
async def test_frames_go_in_order_and_a_close_goes_after_them() -> None:
    server = GatedServer()
    outgoing = Outgoing(server.send, "c1", max_frames=10, max_bytes=1000)
    for frame in ("a", b"b", "c"):
        assert outgoing.push(frame)
    outgoing.close(4000, "bye")
    assert not outgoing.push("too late")
    await server.wait_for(4)
    assert server.sent == [
        {"type": "websocket.send", "text": "a"},
        {"type": "websocket.send", "bytes": b"b"},
        {"type": "websocket.send", "text": "c"},
        {"type": "websocket.close", "code": 4000, "reason": "bye"},
    ]
    assert outgoing.state is State.CLOSED
    await outgoing.discard()


@pytest.mark.asyncio
@pytest.mark.parametrize(("frames", "frame"), [(5, "x"), (3, "x" * 40)])
async def test_a_client_that_cannot_keep_up_is_closed_with_4013(frames: int, frame: str) -> None:
    server = GatedServer()
    outgoing = Outgoing(server.send, "slow", max_frames=4, max_bytes=100)
    server.gate.clear()  # the client stopped reading
    before = counters["slow_client_closed"]
    results = [outgoing.push(frame) for _ in range(frames + 1)]
    await asyncio.sleep(0.01)
    assert results[-1] is False
    assert outgoing.state is State.CLOSED
    assert outgoing.buffered == (0, 0), "what waited for the slow client is dropped"
    assert counters["slow_client_closed"] == before + 1
    assert not outgoing.push("more"), "a closed connection takes nothing"
    server.gate.set()
    await server.wait_for(1)
    assert server.sent[-1] == {"type": "websocket.close", "code": CLOSE_SLOW_CLIENT}
    await outgoing.discard()


@pytest.mark.asyncio
async def test_the_bound_is_on_what_waits_not_on_what_was_written() -> None:
    server = GatedServer()
    outgoing = Outgoing(server.send, "fast", max_frames=2, max_bytes=100)
    for index in range(50):
        assert outgoing.push(str(index))
        await asyncio.sleep(0)  # the writer keeps up
    await server.wait_for(50)
    assert outgoing.state is State.OPEN
    await outgoing.discard()


@pytest.mark.asyncio
async def test_discard_stops_the_writer_and_drops_what_waits() -> None:
    server = GatedServer()
    server.gate.clear()
    outgoing = Outgoing(server.send, "gone", max_frames=10, max_bytes=100)
    outgoing.push("a")
    outgoing.push("b")
    await outgoing.discard()
    assert outgoing.state is State.CLOSED and outgoing.buffered == (0, 0)
    assert not outgoing.push("c")
    server.gate.set()
    await asyncio.sleep(0.01)
    assert server.sent == []


class Recorder:
    """Records the producer calls Twisted would make on daphne's own producer."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class TwistedLikeTransport:
    """Twisted's producer bookkeeping on a socket (the real one is in tests/e2e/test_fanout.py)."""

    def __init__(self) -> None:
        self.producer: Any = Recorder()  # daphne leaves the HTTP channel registered
        self.aborted = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("Cannot register producer: previous one never unregistered")
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def abortConnection(self) -> None:
        self.aborted = True


class DaphneLikeProtocol:
    def __init__(self) -> None:
        self.transport = TwistedLikeTransport()
        self.written: list[dict[str, Any]] = []


class DaphneLikeServer:
    async def handle_reply(self, protocol: DaphneLikeProtocol, message: dict[str, Any]) -> None:
        protocol.written.append(message)


@pytest.mark.asyncio
async def test_under_daphne_the_writer_pauses_while_twisted_buffers() -> None:
    protocol = DaphneLikeProtocol()
    http_channel = protocol.transport.producer
    send = functools.partial(DaphneLikeServer().handle_reply, protocol)
    outgoing = Outgoing(send, "daphne", max_frames=3, max_bytes=100)
    producer = protocol.transport.producer
    assert producer is not http_channel, "a push producer of ours watches the socket"
    outgoing.push("a")
    await asyncio.sleep(0.01)
    assert len(protocol.written) == 1
    producer.pauseProducing()  # Twisted: more than 64 KiB wait for the socket
    outgoing.push("b")
    outgoing.push("c")
    await asyncio.sleep(0.01)
    assert len(protocol.written) == 1 and outgoing.buffered[0] == 2
    producer.resumeProducing()
    await asyncio.sleep(0.01)
    assert [m["text"] for m in protocol.written] == ["a", "b", "c"]
    assert http_channel.calls == ["pause", "resume"], "daphne's own producer is still told"
    producer.pauseProducing()
    for frame in "defg":
        outgoing.push(frame)
    assert outgoing.state is State.CLOSED, "the bound holds while Twisted is full"
    await asyncio.sleep(0.01)
    assert protocol.written[-1] == {"type": "websocket.close", "code": CLOSE_SLOW_CLIENT}
    await outgoing.discard()


class AsyncioLikeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class UvicornLikeProtocol:
    """uvicorn's send waits while the socket is not writable, the close included."""

    def __init__(self) -> None:
        self.transport = AsyncioLikeTransport()
        self.writable = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()


@pytest.mark.asyncio
async def test_a_slow_client_whose_server_takes_no_close_is_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("channels_neffos.namespaces.outgoing.CLOSE_TIMEOUT", 0.05)
    protocol = UvicornLikeProtocol()
    outgoing = Outgoing(protocol.send, "zombie", max_frames=1, max_bytes=100)
    outgoing.push("a")
    outgoing.push("b")
    outgoing.push("c")
    assert outgoing.state is State.CLOSED
    await asyncio.sleep(0.2)
    assert protocol.transport.aborted, "the connection is dropped, not left open"
    await outgoing.discard()
