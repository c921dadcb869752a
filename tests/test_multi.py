"""MultiChannelLayer as a migration bridge: mixed deployments and one broker down."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from channels_neffos import (
    BrokerUnavailable,
    MultiChannelLayer,
    NatsChannelLayer,
    RedisChannelLayer,
)
from channels_neffos.testing.brokers import BrokerProcess, free_port


def bridge(redis_url: str, nats_url: str, prefix: str, **options: Any) -> MultiChannelLayer:
    return MultiChannelLayer(
        layers=[
            {"BACKEND": "channels_neffos.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}},
            {"BACKEND": "channels_neffos.NatsChannelLayer", "CONFIG": {"servers": [nats_url]}},
        ],
        prefix=prefix,
        **options,
    )


async def receive(layer: Any, channel: str, timeout: float = 5) -> Any:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing_more(layer: Any, channel: str) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.3)


@pytest.fixture
def prefix() -> str:
    return "m" + secrets.token_hex(4)


@pytest.mark.asyncio
async def test_instances_on_one_broker_and_on_the_bridge_talk_both_ways(
    redis_server: BrokerProcess, nats_server: BrokerProcess, prefix: str
) -> None:
    migrated = bridge(redis_server.url, nats_server.url, prefix)
    old = RedisChannelLayer(hosts=[redis_server.url], prefix=prefix)
    new = NatsChannelLayer(servers=[nats_server.url], prefix=prefix)
    on_bridge, on_old, on_new = (
        await migrated.new_channel(),
        await old.new_channel(),
        await new.new_channel(),
    )
    for layer, channel in ((migrated, on_bridge), (old, on_old), (new, on_new)):
        await layer.group_add("room", channel)

    await migrated.group_send("room", {"type": "from-bridge"})
    await old.group_send("room", {"type": "from-old"})
    await new.group_send("room", {"type": "from-new"})
    # The bridge member hears all three once; each single-broker member hears its broker's
    # sender and the bridge, once each.
    assert sorted([(await receive(migrated, on_bridge))["type"] for _ in range(3)]) == [
        "from-bridge",
        "from-new",
        "from-old",
    ]
    assert sorted([(await receive(old, on_old))["type"] for _ in range(2)]) == [
        "from-bridge",
        "from-old",
    ]
    assert sorted([(await receive(new, on_new))["type"] for _ in range(2)]) == [
        "from-bridge",
        "from-new",
    ]
    for layer, channel in ((migrated, on_bridge), (old, on_old), (new, on_new)):
        await nothing_more(layer, channel)


@pytest.mark.asyncio
async def test_an_old_instance_asks_a_consumer_on_the_bridge(
    redis_server: BrokerProcess, nats_server: BrokerProcess, prefix: str
) -> None:
    migrated = bridge(redis_server.url, nats_server.url, prefix)
    old = RedisChannelLayer(hosts=[redis_server.url], prefix=prefix)
    channel = await migrated.new_channel()

    async def answer() -> None:
        request = await receive(migrated, channel)
        await migrated.reply(request, {"answer": request["n"] + 1})

    answering = asyncio.ensure_future(answer())
    assert await old.ask(channel, {"type": "q", "n": 1}) == {"answer": 2}
    await answering


@pytest.mark.asyncio
async def test_worker_messages_are_read_once_across_the_bridge(
    redis_server: BrokerProcess, nats_server: BrokerProcess, prefix: str
) -> None:
    sender = bridge(redis_server.url, nats_server.url, prefix)
    readers = [bridge(redis_server.url, nats_server.url, prefix) for _ in range(2)]
    channel = "tasks"
    got: list[int] = []

    async def read(reader: Any) -> None:
        while True:
            got.append((await reader.receive(channel))["n"])

    reading = [asyncio.ensure_future(read(reader)) for reader in readers]
    await asyncio.sleep(0.2)
    for n in range(40):
        await sender.send(channel, {"type": "task", "n": n})
    for _ in range(100):
        if len(got) >= 40:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    for task in reading:
        task.cancel()
    await asyncio.gather(*reading, return_exceptions=True)
    assert sorted(got) == list(range(40))


@pytest.mark.asyncio
@pytest.mark.parametrize("down", ["redis", "nats"])
async def test_one_broker_unreachable_the_bridge_works_through_the_other(
    redis_server: BrokerProcess, nats_server: BrokerProcess, prefix: str, down: str
) -> None:
    dead = f"{down}://127.0.0.1:{free_port()}"
    redis_url = dead if down == "redis" else redis_server.url
    nats_url = dead if down == "nats" else nats_server.url
    a, b = bridge(redis_url, nats_url, prefix), bridge(redis_url, nats_url, prefix)
    channel_a, channel_b = await a.new_channel(), await b.new_channel()
    await b.group_add("room", channel_b)

    await a.send(channel_b, {"type": "direct"})
    assert (await receive(b, channel_b))["type"] == "direct"
    await a.group_send("room", {"type": "group"})
    assert (await receive(b, channel_b))["type"] == "group"

    async def answer() -> None:
        request = await receive(b, channel_b)
        await b.reply(request, {"via": "the broker that is up"})

    answering = asyncio.ensure_future(answer())
    reply = await a.ask(channel_b, {"type": "q"})  # falls through the dead child
    assert reply == {"via": "the broker that is up"}
    await answering
    await a.send(channel_a, {"type": "local"})
    assert (await receive(a, channel_a))["type"] == "local"


@pytest.mark.asyncio
async def test_every_broker_unreachable_raises(prefix: str) -> None:
    layer = bridge(f"redis://127.0.0.1:{free_port()}", f"nats://127.0.0.1:{free_port()}", prefix)
    with pytest.raises(BrokerUnavailable):
        await layer.new_channel()
    with pytest.raises(BrokerUnavailable):
        await layer.group_send("room", {"type": "x"})


@pytest.mark.asyncio
async def test_a_broker_dying_midway_is_survived(
    fresh_redis_server: BrokerProcess, nats_server: BrokerProcess, prefix: str
) -> None:
    a = bridge(fresh_redis_server.url, nats_server.url, prefix)
    b = bridge(fresh_redis_server.url, nats_server.url, prefix)
    channel = await b.new_channel()
    await a.send(channel, {"type": "before"})
    assert (await receive(b, channel))["type"] == "before"
    fresh_redis_server.kill()
    await asyncio.sleep(0.3)
    await a.send(channel, {"type": "during"})
    assert (await receive(b, channel))["type"] == "during"
    await nothing_more(b, channel)


def test_configuration_errors() -> None:
    with pytest.raises(TypeError, match="needs CONFIG"):
        MultiChannelLayer()
    with pytest.raises(TypeError, match="channels_neffos layers only"):
        MultiChannelLayer(layers=[{"BACKEND": "channels.layers.InMemoryChannelLayer"}])
    with pytest.raises(TypeError, match="unknown keys"):
        MultiChannelLayer(layers=[{"BACKEND": "channels_neffos.NatsChannelLayer", "X": 1}])
    with pytest.raises(TypeError, match="no_such_option"):
        MultiChannelLayer(
            layers=[{"BACKEND": "channels_neffos.NatsChannelLayer"}], no_such_option=1
        )
