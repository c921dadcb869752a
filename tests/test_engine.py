"""Engine behaviour that is the same on every broker (run here on Redis and NATS)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channels_neffos import LayerClosed, envelope
from channels_neffos.testing.conformance import LayerSpec, eventually


@pytest.fixture(params=["redis", "nats"])
def spec(request: pytest.FixtureRequest) -> LayerSpec:
    return request.getfixturevalue(f"{request.param}_spec")


@pytest.mark.asyncio
async def test_garbage_from_the_broker_is_dropped_and_counted(
    spec: LayerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    layer = spec.build()
    channel = await layer.new_channel()
    process = layer._routers[asyncio.get_running_loop()]
    subject = process.channel_route(process.pid, channel)[0]
    with caplog.at_level(logging.WARNING, logger="channels_neffos"):
        await process.transport.publish(subject, b"\xc1not msgpack")
        await process.transport.publish(
            subject, envelope.encode(envelope.Envelope(9, "x", "y", b""))
        )
        await layer.send(channel, {"type": "still works"})
        other = spec.build()
        await other.send(channel, {"type": "after garbage"})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "still works"
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "after garbage"
    assert layer.counters["garbage"] == 2
    assert any("format this layer cannot read" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_an_envelope_whose_body_is_no_message_is_dropped_not_raised_to_receive(
    spec: LayerSpec,
) -> None:
    """A well-formed envelope can still carry a body that is not a msgpack map (a peer on
    another format): ``receive()`` must neither raise nor return it, and must not stop."""
    layer = spec.build()
    channel = await layer.new_channel()
    process = layer._routers[asyncio.get_running_loop()]
    subject = process.channel_route(process.pid, channel)[0]
    for body in (b"\xc1", b"\x93\x01\x02\x03", b"\xa3str", b"\x81\x01"):
        envelope_bytes = envelope.encode(envelope.Envelope(envelope.CHANNEL, "x", channel, body))
        await process.transport.publish(subject, envelope_bytes)
    await spec.build().send(channel, {"type": "after garbage"})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "after garbage"
    assert layer.counters["garbage"] == 4


@pytest.mark.asyncio
async def test_remote_messages_to_a_full_channel_are_dropped_and_counted(spec: LayerSpec) -> None:
    receiver, sender = spec.build(capacity=5), spec.build(capacity=5)
    channel = await receiver.new_channel()
    for n in range(8):
        await sender.send(channel, {"type": "n", "n": n})
    await sender.send(channel, {"type": "n", "n": 99})
    for _ in range(500):  # let everything arrive before anyone receives
        if receiver.counters["channel_full"] >= 4:
            break
        await asyncio.sleep(0.01)
    got = []
    while len(got) < 5:
        got.append((await asyncio.wait_for(receiver.receive(channel), 5))["n"])
    assert got == [0, 1, 2, 3, 4]
    assert receiver.counters["channel_full"] == 4


@pytest.mark.asyncio
async def test_dead_channels_are_swept_with_their_memberships(spec: LayerSpec) -> None:
    """A consumer that vanished without group_discard must not leak (channels_redis does)."""
    layer = spec.build(expiry=1)
    process_channels = [await layer.new_channel() for _ in range(20)]
    for channel in process_channels:
        await layer.group_add("room", channel)
    process = layer._routers[asyncio.get_running_loop()]
    await layer.group_send("room", {"type": "unread"})
    await asyncio.sleep(1.2)
    survivor = await layer.new_channel()  # new channels trigger the periodic sweep
    assert list(process.mailboxes) == [survivor]
    assert "room" not in process.groups.members
    assert layer.counters["expired"] == 20


@pytest.mark.asyncio
async def test_worker_channel_groups_are_refused_with_advice(spec: LayerSpec) -> None:
    layer = spec.build()
    with pytest.raises(ValueError, match="worker channel"):
        await layer.group_add("g", "plain-worker-channel")


@pytest.mark.asyncio
async def test_send_to_process_channel_not_made_by_new_channel(spec: LayerSpec) -> None:
    layer = spec.build()
    with pytest.raises(ValueError, match="new_channel"):
        await layer.send("specific.inmemory!abc", {"type": "x"})


@pytest.mark.asyncio
async def test_close_wakes_waiting_receives_and_asks_with_layer_closed(spec: LayerSpec) -> None:
    layer, other = spec.build(), spec.build()
    channel = await layer.new_channel()
    silent = await other.new_channel()  # exists, but nobody answers asks on it
    receiving = asyncio.ensure_future(layer.receive(channel))
    asking = asyncio.ensure_future(layer.ask(silent, {"type": "q"}, timeout=30))
    router = layer._routers[asyncio.get_running_loop()]
    await eventually(lambda: bool(router.requests.pending), what="the ask under way")
    await layer.close()
    with pytest.raises(LayerClosed, match=channel):
        await asyncio.wait_for(receiving, 5)
    with pytest.raises(LayerClosed, match=silent):
        await asyncio.wait_for(asking, 5)
    # The layer itself stays usable: the next call connects afresh.
    fresh = await layer.new_channel()
    await other.send(fresh, {"type": "after"})
    assert (await asyncio.wait_for(layer.receive(fresh), 5))["type"] == "after"
