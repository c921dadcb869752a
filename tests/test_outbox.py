"""Coalescing publishes into frames: what leaves for the broker, in what order, and when."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from asgiref.sync import async_to_sync

from channels_neffos import NatsChannelLayer, RedisChannelLayer, envelope
from channels_neffos._core.outbox import FRAME_BYTES
from channels_neffos.testing.brokers import BrokerProcess, NatsServer
from channels_neffos.testing.conformance import LayerSpec


@pytest.fixture(params=["redis", "nats"])
def spec(request: pytest.FixtureRequest) -> LayerSpec:
    return request.getfixturevalue(f"{request.param}_spec")


class BrokerTap:
    """A raw Redis subscriber that records every broker message under a prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis_asyncio.from_url(url)
        self.pubsub = self.client.pubsub()
        self.prefix = prefix
        self.payloads: list[bytes] = []

    async def __aenter__(self) -> BrokerTap:
        await self.pubsub.psubscribe(f"{self.prefix}:*")
        await self.pubsub.get_message(timeout=5)  # the psubscribe confirmation
        return self

    async def collect(self, messages: int, timeout: float = 10) -> list[envelope.Envelope]:
        """Read broker messages until they hold ``messages`` envelopes; return the envelopes."""
        decoded: list[envelope.Envelope] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(decoded) < messages and asyncio.get_running_loop().time() < deadline:
            raw = await self.pubsub.get_message(timeout=1)
            if raw is not None and raw["type"] == "pmessage":
                self.payloads.append(raw["data"])
                decoded += envelope.decode_frame(raw["data"])
        return decoded

    async def __aexit__(self, *exc: Any) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


async def connected(sender: Any, receiver: Any) -> str:
    """A channel of ``receiver`` that one message from ``sender`` has already reached."""
    channel: str = await receiver.new_channel()
    await sender.send(channel, {"type": "warm-up"})
    await asyncio.wait_for(receiver.receive(channel), 5)
    return channel


def layers(url: str, prefix: str, **config: Any) -> tuple[RedisChannelLayer, RedisChannelLayer]:
    return (
        RedisChannelLayer(hosts=[url], prefix=prefix, capacity=10_000, **config),
        RedisChannelLayer(hosts=[url], prefix=prefix, capacity=10_000, **config),
    )


@pytest.mark.asyncio
async def test_a_burst_to_one_channel_leaves_as_few_frames(redis_server: BrokerProcess) -> None:
    sender, receiver = layers(redis_server.url, "burst")
    channel = await receiver.new_channel()
    async with BrokerTap(redis_server.url, "burst") as tap:
        for n in range(1000):
            await sender.send(channel, {"type": "n", "n": n})
        sent = await tap.collect(1000)
    assert [envelope.unpack_body(e.body)["n"] for e in sent] == list(range(1000))
    # ~70 kB in all: the first of each turn leaves alone, the rest in frames of up to 64 KiB.
    assert len(tap.payloads) <= 6, f"{len(tap.payloads)} broker messages for 1000 sends"
    for n in range(1000):
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == n


@pytest.mark.asyncio
async def test_frames_stay_within_frame_bytes(redis_server: BrokerProcess) -> None:
    sender, receiver = layers(redis_server.url, "big")
    channel = await receiver.new_channel()
    text = "x" * 1000
    async with BrokerTap(redis_server.url, "big") as tap:
        for n in range(300):  # ~300 kB in one turn
            await sender.send(channel, {"type": "n", "n": n, "text": text})
        sent = await tap.collect(300)
    assert [envelope.unpack_body(e.body)["n"] for e in sent] == list(range(300))
    assert len(tap.payloads) >= 5
    assert max(len(payload) for payload in tap.payloads) <= FRAME_BYTES


@pytest.mark.asyncio
async def test_a_message_larger_than_a_frame_travels_alone(redis_server: BrokerProcess) -> None:
    sender, receiver = layers(redis_server.url, "large")
    channel = await receiver.new_channel()
    big = "y" * (FRAME_BYTES * 2)
    async with BrokerTap(redis_server.url, "large") as tap:
        await sender.send(channel, {"type": "first"})
        await sender.send(channel, {"type": "big", "text": big})
        await sender.send(channel, {"type": "last"})
        sent = await tap.collect(3)
    assert [envelope.unpack_body(e.body)["type"] for e in sent] == ["first", "big", "last"]
    assert len(tap.payloads) == 3
    for expected in ("first", "big", "last"):
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["type"] == expected


@pytest.mark.asyncio
async def test_frames_stay_within_a_small_nats_max_payload() -> None:
    with NatsServer(config="max_payload: 4KB\n") as server:
        sender = NatsChannelLayer(servers=[server.url], capacity=1000)
        receiver = NatsChannelLayer(servers=[server.url], capacity=1000)
        channel = await connected(sender, receiver)
        text = "z" * 1000
        for n in range(200):  # ~200 kB in one turn: frames must split at 4 KiB, not 64 KiB
            await sender.send(channel, {"type": "n", "n": n, "text": text})
        got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(200)]
        assert got == list(range(200))
        assert sender.counters["broker_down"] == 0
        await sender.close()
        await receiver.close()


@pytest.mark.asyncio
async def test_order_across_subjects_is_kept(redis_server: BrokerProcess) -> None:
    """Runs of sends and group_sends reaching one channel arrive exactly in the order made."""
    sender, receiver = layers(redis_server.url, "order")
    channel = await receiver.new_channel()
    other = await receiver.new_channel()
    await receiver.group_add("room", channel)
    expected = []
    for n in range(400):
        if n % 7 < 3:
            await sender.group_send("room", {"type": "n", "n": n})
            expected.append(n)
        elif n % 7 < 5:
            await sender.send(channel, {"type": "n", "n": n})
            expected.append(n)
        else:
            await sender.send(other, {"type": "n", "n": n})
    got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in expected]
    assert got == expected


@pytest.mark.asyncio
async def test_sends_to_several_channels_of_one_process_share_frames(
    redis_server: BrokerProcess,
) -> None:
    sender, receiver = layers(redis_server.url, "fan")
    channels = [await receiver.new_channel() for _ in range(10)]
    async with BrokerTap(redis_server.url, "fan") as tap:
        for n in range(1000):  # round robin: no two consecutive sends share a channel
            await sender.send(channels[n % 10], {"type": "n", "n": n})
        sent = await tap.collect(1000)
    assert [envelope.unpack_body(e.body)["n"] for e in sent] == list(range(1000))
    assert len(tap.payloads) <= 6, f"{len(tap.payloads)} broker messages for 1000 sends"
    for index, channel in enumerate(channels):
        got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(100)]
        assert got == list(range(index, 1000, 10))


@pytest.mark.asyncio
async def test_frames_never_mix_processes(spec: LayerSpec) -> None:
    """Alternating between two receiving processes: each gets exactly its own, in order."""
    sender = spec.build(capacity=1000)
    receivers = [spec.build(capacity=1000), spec.build(capacity=1000)]
    channels = [[await r.new_channel(), await r.new_channel()] for r in receivers]
    for n in range(600):
        process, channel = n % 2, (n // 2) % 2
        await sender.send(channels[process][channel], {"type": "n", "n": n})
    for process, (receiver, pair) in enumerate(zip(receivers, channels, strict=True)):
        for channel, name in enumerate(pair):
            got = [(await asyncio.wait_for(receiver.receive(name), 5))["n"] for _ in range(150)]
            assert got == [n for n in range(600) if n % 2 == process and (n // 2) % 2 == channel]
        held = receiver._routers[asyncio.get_running_loop()].mailboxes
        assert set(held) == set(pair), "a process was handed another process's messages"


@pytest.mark.asyncio
async def test_the_first_publish_of_a_turn_is_not_held_back(spec: LayerSpec) -> None:
    sender, receiver = spec.build(), spec.build()
    channel = await connected(sender, receiver)
    outbox = sender._routers[asyncio.get_running_loop()].outbox
    await asyncio.sleep(0)  # a new turn
    await sender.send(channel, {"type": "alone"})
    assert outbox.collected == 0, "a lone send went to the transport at once"
    await sender.send(channel, {"type": "second"})
    assert outbox.collected == 1, "a second send in the same turn waits for company"
    for expected in ("alone", "second"):
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["type"] == expected
    assert outbox.collected == 0


@pytest.mark.asyncio
async def test_an_ask_does_not_overtake_collected_sends(spec: LayerSpec) -> None:
    asker, responder = spec.build(capacity=1000), spec.build(capacity=1000)
    channel = await connected(asker, responder)

    async def answer() -> list[int]:
        seen = []
        while True:
            message = await responder.receive(channel)
            if responder.is_ask(message):
                await responder.reply(message, {"seen": len(seen)})
                return seen
            seen.append(message["n"])

    answering = asyncio.ensure_future(answer())
    await asyncio.sleep(0)
    for n in range(50):
        await asker.send(channel, {"type": "n", "n": n})
    reply = await asker.ask(channel, {"type": "count"}, timeout=5)
    assert reply == {"seen": 50}
    assert await answering == list(range(50))


@pytest.mark.asyncio
async def test_replies_to_concurrent_asks_share_frames(redis_server: BrokerProcess) -> None:
    asker, responder = layers(redis_server.url, "replies")
    channel = await responder.new_channel()

    async def answer() -> None:
        while True:
            request = await responder.receive(channel)
            await responder.reply(request, {"n": request["n"]})

    answering = asyncio.ensure_future(answer())
    try:
        await asker.ask(channel, {"type": "q", "n": -1}, timeout=5)
        asker_pid = asker._routers[asyncio.get_running_loop()].pid
        async with BrokerTap(redis_server.url, f"replies:{asker_pid}") as tap:
            answers = await asyncio.gather(
                *(asker.ask(channel, {"type": "q", "n": n}, timeout=5) for n in range(100))
            )
            replies = await tap.collect(100)
    finally:
        answering.cancel()
    assert [a["n"] for a in answers] == list(range(100))
    assert {reply.kind for reply in replies} == {envelope.REPLY}
    assert len(tap.payloads) < 50, f"{len(tap.payloads)} broker messages for 100 replies"


@pytest.mark.asyncio
async def test_closing_sends_what_was_collected(spec: LayerSpec) -> None:
    sender, receiver = spec.build(), spec.build()
    channel = await connected(sender, receiver)
    for n in range(20):
        await sender.send(channel, {"type": "n", "n": n})
    await sender.close()
    got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(20)]
    assert got == list(range(20))


@pytest.mark.asyncio
async def test_a_burst_from_async_to_sync_is_delivered_whole(spec: LayerSpec) -> None:
    """A Django view's loop closes right after the call: what it collected still leaves."""
    sender, receiver = spec.build(), spec.build()
    channel = await receiver.new_channel()

    async def burst() -> None:
        for n in range(50):
            await sender.send(channel, {"type": "n", "n": n})

    await asyncio.to_thread(async_to_sync(burst))
    got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(50)]
    assert got == list(range(50))


# -- the frame format ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 15, 16, 65535, 65536])
def test_frames_of_every_size_decode_in_order(count: int) -> None:
    payloads = [
        envelope.encode(envelope.Envelope(envelope.CHANNEL, "p", f"c{n}", b""))
        for n in range(count)
    ]
    decoded = envelope.decode_frame(envelope.frame(payloads))
    assert [e.target for e in decoded] == [f"c{n}" for n in range(count)]
    if count == 1:
        assert envelope.frame(payloads) == payloads[0]  # a lone envelope travels bare


def test_a_frame_with_one_bad_envelope_is_refused_whole() -> None:
    good = envelope.encode(envelope.Envelope(envelope.CHANNEL, "p", "c", b""))
    bad = envelope.encode(envelope.Envelope(9, "p", "c", b""))
    with pytest.raises(ValueError):
        envelope.decode_frame(envelope.frame([good, bad]))


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_envelope_from_a_header_equals_the_full_encoding(size: int) -> None:
    body = b"b" * size
    header = envelope.header(envelope.CHANNEL, "abcdef012345", "specific.x!y")
    assert envelope.with_body(header, body) == envelope.encode(
        envelope.Envelope(envelope.CHANNEL, "abcdef012345", "specific.x!y", body)
    )
