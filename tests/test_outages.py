"""Broker outages: local traffic keeps working, losses are counted, service resumes by itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from channels_neffos import BrokerUnavailable, NatsChannelLayer, RedisChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer


def layers_on(server: BrokerProcess) -> Callable[[], Any]:
    if isinstance(server, RedisServer):
        return lambda: RedisChannelLayer(hosts=[server.url], prefix="outage")
    return lambda: NatsChannelLayer(servers=[server.url], prefix="outage")


@pytest.fixture(params=["redis", "nats"])
def server(request: pytest.FixtureRequest) -> Any:
    server_class = RedisServer if request.param == "redis" else NatsServer
    with server_class() as running:
        yield running


async def eventually_delivered(
    sender: Any, receiver: Any, channel: str, timeout: float = 15
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await sender.send(channel, {"type": "probe"})
        try:
            await asyncio.wait_for(receiver.receive(channel), 0.5)
            return
        except asyncio.TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


@pytest.mark.asyncio
async def test_local_traffic_survives_broker_loss_and_remote_traffic_resumes(
    server: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    make_layer = layers_on(server)
    a, b = make_layer(), make_layer()
    channel_a, channel_b = await a.new_channel(), await b.new_channel()
    other_a = await a.new_channel()
    await a.group_add("room", channel_a)
    await a.group_add("room", other_a)
    await eventually_delivered(a, b, channel_b)

    server.kill()
    await asyncio.sleep(0.5)
    # Local first: a's own channels and its local group members don't need the broker.
    await a.send(channel_a, {"type": "local"})
    assert (await asyncio.wait_for(a.receive(channel_a), 2))["type"] == "local"
    await a.group_send("room", {"type": "local-group"})
    assert (await asyncio.wait_for(a.receive(channel_a), 2))["type"] == "local-group"
    assert (await asyncio.wait_for(a.receive(other_a), 2))["type"] == "local-group"
    # Remote sends during the outage don't raise in the sender's handler.
    dropped_before = a.counters["broker_down"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="channels_neffos"):
        for _ in range(300):
            await a.send(channel_b, {"type": "lost"})
        await asyncio.sleep(0.1)  # sends collected in one turn leave (and are counted) after it
    if isinstance(server, RedisServer):  # NATS buffers the first 2 MiB for after the reconnect
        assert a.counters["broker_down"] - dropped_before == 300
        drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drop_lines) <= 1, "drops are logged at a limited rate"

    server.start()
    await eventually_delivered(a, b, channel_b)
    # Group subscriptions came back too.
    await b.group_send("room", {"type": "after"})
    while (await asyncio.wait_for(a.receive(channel_a), 5))["type"] != "after":
        pass
    assert a.counters["connection_lost"] >= 1


@pytest.mark.asyncio
async def test_nats_layer_outlives_nats_py_giving_up(caplog: pytest.LogCaptureFixture) -> None:
    """A finite max_reconnect_attempts makes nats-py close its client for good; the layer
    connects anew once the server is back (it stayed dead before, and raised raw nats errors)."""
    with NatsServer() as server:
        options = {"max_reconnect_attempts": 2, "reconnect_time_wait": 0.1, "connect_timeout": 0.5}
        a = NatsChannelLayer(servers=[server.url], prefix="giveup", connect_options=options)
        b = NatsChannelLayer(servers=[server.url], prefix="giveup")
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await a.group_add("room", channel_a)
        await eventually_delivered(b, a, channel_a)
        server.kill()
        with caplog.at_level(logging.WARNING, logger="channels_neffos"):
            deadline = asyncio.get_running_loop().time() + 10
            while "gave up reconnecting" not in caplog.text:
                assert asyncio.get_running_loop().time() < deadline, caplog.text
                await asyncio.sleep(0.05)
        with pytest.raises(BrokerUnavailable):  # not a raw nats-py error
            await a.group_add("other-room", channel_a)
        server.start()
        await eventually_delivered(b, a, channel_a)  # a's wildcard subscription is back
        await eventually_delivered(a, b, channel_b)
        await b.group_send("room", {"type": "after"})
        while (await asyncio.wait_for(a.receive(channel_a), 5))["type"] != "after":
            pass  # probes still on their way
        assert a.counters["connection_restored"] >= 1
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_signals_fire_once_per_outage(server: BrokerProcess) -> None:
    """broker_connection_lost/restored: once per outage and process, with the layer, the masked
    address and how long it was down; a receiver that raises disturbs nothing."""
    from channels_neffos.signals import broker_connection_lost, broker_connection_restored

    events: list[tuple[str, dict[str, Any]]] = []

    def on_lost(sender: type, **details: Any) -> None:
        events.append(("lost", details))

    def on_restored(sender: type, **details: Any) -> None:
        events.append(("restored", details))

    def broken(sender: type, **details: Any) -> None:
        raise RuntimeError("a receiver that fails")

    make_layer = layers_on(server)
    a, b = make_layer(), make_layer()
    for signal, receiver in (
        (broker_connection_lost, on_lost),
        (broker_connection_restored, on_restored),
        (broker_connection_lost, broken),
        (broker_connection_restored, broken),
    ):
        signal.connect(receiver, weak=False)
    try:
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await eventually_delivered(a, b, channel_b)
        assert events == []
        server.kill()
        deadline = asyncio.get_running_loop().time() + 10
        while {id(d["layer"]) for kind, d in events if kind == "lost"} != {id(a), id(b)}:
            assert asyncio.get_running_loop().time() < deadline, events
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # reconnect attempts fail meanwhile: no more signals
        server.start()
        await eventually_delivered(a, b, channel_b)
        await eventually_delivered(b, a, channel_a)
        while len([kind for kind, _ in events if kind == "restored"]) < 2:
            assert asyncio.get_running_loop().time() < deadline + 20, events
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for layer in (a, b):
            mine = [(kind, d) for kind, d in events if d["layer"] is layer]
            assert [kind for kind, _ in mine] == ["lost", "restored"], events
            lost, restored = mine[0][1], mine[1][1]
            assert lost["broker"] == restored["broker"] == server.url
            assert isinstance(lost["reason"], str) and lost["pid"] == restored["pid"]
            assert 1.5 < restored["down_for"] < 30
    finally:
        for signal, receiver in (
            (broker_connection_lost, on_lost),
            (broker_connection_restored, on_restored),
            (broker_connection_lost, broken),
            (broker_connection_restored, broken),
        ):
            signal.disconnect(receiver)
        await a.close()
        await b.close()
