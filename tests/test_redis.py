"""Redis-specific behaviour: names on the broker, startup errors, configuration."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis_asyncio

from channels_neffos import BrokerUnavailable, RedisChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, free_port


@pytest.mark.asyncio
async def test_one_pattern_per_process_however_many_channels_and_groups(
    fresh_redis_server: BrokerProcess,
) -> None:
    layers = [RedisChannelLayer(hosts=[fresh_redis_server.url], prefix="app") for _ in range(3)]
    for index, layer in enumerate(layers):
        channels = [await layer.new_channel() for _ in range(50)]
        for n, channel in enumerate(channels):
            await layer.group_add(f"group-{index}-{n % 20}", channel)
            await layer.group_add("everyone", channel)
    client = redis_asyncio.from_url(fresh_redis_server.url)
    try:
        assert await client.execute_command("PUBSUB", "NUMPAT") == 3
        patterns = await client.execute_command("PUBSUB", "CHANNELS", "app:g:*")
        assert len(patterns) == 3 * 20 + 1  # exact group subscriptions, one per group
        counts = dict(await client.pubsub_numsub("app:g:everyone"))
        assert counts[b"app:g:everyone"] == 3  # one subscription per process, not per member
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_group_subscription_is_dropped_with_the_last_member(
    fresh_redis_server: BrokerProcess,
) -> None:
    layer = RedisChannelLayer(hosts=[fresh_redis_server.url], prefix="app")
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", one)
    await layer.group_add("room", two)
    client = redis_asyncio.from_url(fresh_redis_server.url)
    try:
        await layer.group_discard("room", one)
        await asyncio.sleep(0.1)
        assert dict(await client.pubsub_numsub("app:g:room"))[b"app:g:room"] == 1
        await layer.group_discard("room", two)
        await asyncio.sleep(0.1)
        assert dict(await client.pubsub_numsub("app:g:room"))[b"app:g:room"] == 0
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_unreachable_server_at_startup_raises_broker_unavailable_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    layer = RedisChannelLayer(hosts=[url])
    with pytest.raises(BrokerUnavailable, match=url.replace(".", r"\.")):
        await layer.new_channel()
    with pytest.raises(BrokerUnavailable):  # and again: a failed start is not cached
        await layer.send("worker", {"type": "x"})


def test_password_is_not_shown_in_errors() -> None:
    layer = RedisChannelLayer(hosts=["redis://user:secret@127.0.0.1:1/0"])
    transport = layer.make_transport(events=None)  # type: ignore[arg-type]
    assert "secret" not in transport.url
    assert "***" in transport.url


def test_hosts_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="pass a list"):
        RedisChannelLayer(hosts="redis://localhost:6379")  # type: ignore[arg-type]


def test_several_hosts_are_refused_with_advice() -> None:
    with pytest.raises(TypeError, match="sharding across several servers is not supported"):
        RedisChannelLayer(hosts=["redis://a:6379", "redis://b:6379"])


@pytest.mark.asyncio
async def test_hosts_as_dict_of_connection_options(redis_server: BrokerProcess) -> None:
    layer = RedisChannelLayer(
        hosts=[{"host": "127.0.0.1", "port": redis_server.port, "db": 0}], prefix="dicthost"
    )
    channel = await layer.new_channel()
    other = RedisChannelLayer(hosts=[{"address": redis_server.url}], prefix="dicthost")
    await other.send(channel, {"type": "x"})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "x"


@pytest.mark.asyncio
async def test_sequential_sends_are_pipelined(redis_server: BrokerProcess) -> None:
    """5,000 awaited sends must not cost 5,000 round trips: they leave in few socket writes."""
    sender = RedisChannelLayer(hosts=[redis_server.url], prefix="pipe", capacity=10_000)
    receiver = RedisChannelLayer(hosts=[redis_server.url], prefix="pipe", capacity=10_000)
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "warm-up"})
    await asyncio.wait_for(receiver.receive(channel), 5)
    process = sender._processes[asyncio.get_running_loop()]
    writer = process.transport._commands._writer
    writes = 0
    original_write = writer.write

    def counting_write(data: bytes) -> None:
        nonlocal writes
        writes += 1
        original_write(data)

    writer.write = counting_write  # type: ignore[method-assign]
    for n in range(5000):
        await sender.send(channel, {"type": "n", "n": n})
    for _ in range(5000):
        await asyncio.wait_for(receiver.receive(channel), 5)
    assert writes < 100, f"{writes} socket writes for 5000 sends"
