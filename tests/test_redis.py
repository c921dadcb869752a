"""Redis-specific behaviour: names on the broker, startup errors, configuration."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

import pytest
import redis.asyncio as redis_asyncio

from channels_neffos import BrokerUnavailable, RedisChannelLayer
from channels_neffos._core.names import Names
from channels_neffos.testing.brokers import BrokerProcess, RedisServer, free_port
from channels_neffos.testing.conformance import eventually
from channels_neffos.transports.redis import RedisTransport
from channels_neffos.transports.redis_sharded import ShardedRedisTransport


class NoEvents:
    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def no_responders(self, reply_subject: str) -> None: ...

    def dropped(self, reason: str, where: str) -> None: ...


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


async def _none_left(count: Awaitable[int]) -> bool:
    return await count == 0


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

        async def subscribers() -> int:
            return int(dict(await client.pubsub_numsub("app:g:room"))[b"app:g:room"])

        await layer.group_discard("room", one)
        await asyncio.sleep(0.05)  # a member is left: the subscription must stay
        assert await subscribers() == 1
        await layer.group_discard("room", two)
        await eventually(lambda: _none_left(subscribers()), what="no subscriber left")
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


# -- several servers -------------------------------------------------------------------------


def test_a_process_pattern_and_its_subjects_share_a_server() -> None:
    shards = ShardedRedisTransport(
        [RedisTransport(f"redis://127.0.0.1:{n}", "app", NoEvents()) for n in (1, 2, 3)]
    )
    names = Names("app", shards.subject, shards.wildcard)
    pid = "0123456789ab"
    home = shards.shard(names.process(pid).shard)
    assert shards.shard(names.channel(pid, f"specific.{pid}!x").shard) is home
    assert shards.shard(names.reply_inbox(pid).shard) is home
    assert shards.shard(names.presence(pid).shard) is home
    assert names.group("room").shard == "room"
    assert names.queue("work.queue").shard == "work.queue"
    assert len({id(shards.shard(names.group(f"group{n}").shard)) for n in range(30)}) == 3


def home(layer: RedisChannelLayer, prefix: str) -> RedisTransport:
    """The server that holds this layer's process pattern (in the running loop)."""
    process = layer._routers[asyncio.get_running_loop()]
    transport = process.transport
    assert isinstance(transport, ShardedRedisTransport)
    return transport.shard(process.pid)


async def layers_on_both_servers(hosts: list[str], prefix: str) -> list[RedisChannelLayer]:
    """Layers (one process each) until both servers hold at least one process pattern."""
    layers: list[RedisChannelLayer] = []
    homes: set[str] = set()
    while len(homes) < 2 or len(layers) < 4:
        layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
        await layer.new_channel()
        homes.add(home(layer, prefix).url)  # the url: every layer has its own transport objects
        layers.append(layer)
        assert len(layers) < 40, "crc32 put every process on one server"
    return layers


@pytest.mark.asyncio
async def test_several_servers_share_processes_and_groups() -> None:
    with RedisServer() as first, RedisServer() as second:  # private: NUMPAT counts everyone
        await check_sharing([first, second])


async def check_sharing(servers: list[BrokerProcess]) -> None:
    layers = await layers_on_both_servers([s.url for s in servers], "shared")
    channels = [await layer.new_channel() for layer in layers]
    for sender in layers:  # every process reaches every other, whichever server it lives on
        for channel in channels:
            await sender.send(channel, {"type": "hello"})
    for layer, channel in zip(layers, channels, strict=True):
        for _ in layers:
            assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "hello"
    groups = [f"room{n}" for n in range(10)]
    for layer, channel in zip(layers, channels, strict=True):
        for group in groups:
            await layer.group_add(group, channel)
    for group in groups:
        await layers[0].group_send(group, {"type": "to", "group": group})
    for layer, channel in zip(layers, channels, strict=True):
        got = {(await asyncio.wait_for(layer.receive(channel), 5))["group"] for _ in groups}
        assert got == set(groups)
    patterns, group_subscriptions = [], []
    for server in servers:
        client = redis_asyncio.from_url(server.url)
        try:
            patterns.append(await client.execute_command("PUBSUB", "NUMPAT"))
            group_subscriptions.append(
                len(await client.execute_command("PUBSUB", "CHANNELS", "shared:g:*"))
            )
        finally:
            await client.aclose()
    assert sum(patterns) == len(layers) and min(patterns) >= 1, patterns
    assert sum(group_subscriptions) == len(groups) and min(group_subscriptions) >= 1
    for layer in layers:
        await layer.close()


@pytest.mark.asyncio
async def test_one_server_down_leaves_the_others_working(
    redis_server: BrokerProcess, fresh_redis_server: BrokerProcess
) -> None:
    hosts = [redis_server.url, fresh_redis_server.url]
    layers = await layers_on_both_servers(hosts, "halfdown")
    on_stable = [layer for layer in layers if home(layer, "halfdown").url == redis_server.url]
    receiver = on_stable[0]
    channel = await receiver.new_channel()
    fresh_redis_server.kill()
    await asyncio.sleep(0.3)
    for sender in layers:
        await sender.send(channel, {"type": "still here"})
    for _ in layers:
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["type"] == "still here"


@pytest.mark.asyncio
async def test_an_unreachable_server_among_several_fails_startup_naming_it(
    redis_server: BrokerProcess,
) -> None:
    down = f"redis://127.0.0.1:{free_port()}"
    layer = RedisChannelLayer(hosts=[redis_server.url, down])
    with pytest.raises(BrokerUnavailable, match=down.replace(".", r"\.")):
        await layer.new_channel()


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
    process = sender._routers[asyncio.get_running_loop()]
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


@pytest.mark.asyncio
async def test_a_server_that_wants_a_password_fails_at_once_naming_authentication() -> None:
    with RedisServer() as server:
        admin = redis_asyncio.Redis.from_url(server.url)
        await admin.config_set("requirepass", "sentinel-secret-8")
        await admin.aclose()
        layer = RedisChannelLayer(hosts=[server.url])
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailable, match=r"(?i)authentication") as refused:
            await layer.new_channel()
        assert loop.time() - started < 1
        assert "sentinel-secret-8" not in f"{refused.value} {refused.value!r}"
        with_password = server.url.replace("redis://", "redis://:sentinel-secret-8@")
        layer = RedisChannelLayer(hosts=[with_password])
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "ok"})
        assert (await layer.receive(channel))["type"] == "ok"
        await layer.close()


def test_close_right_after_a_burst_delivers_the_burst(redis_server: RedisServer) -> None:
    """``close()`` waits for Redis to answer what was written: closing with replies unread
    resets the socket, and Redis drops the commands it had not run yet. Redis is paused for
    writes (PUBLISH included) while the burst leaves, so the burst is still unanswered at
    ``close()``; every message must arrive anyway."""
    sent = 500
    received: list[int] = []

    async def receive() -> None:
        receiver = RedisChannelLayer(hosts=[redis_server.url], prefix="drain", capacity=sent)
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        ready.set()
        while len(received) < sent:
            received.append((await asyncio.wait_for(receiver.receive(channel), 10))["n"])
        await receiver.close()

    async def publish() -> None:
        sender = RedisChannelLayer(hosts=[redis_server.url], prefix="drain")
        await sender.new_channel()
        redis_server.admin_command("CLIENT", "PAUSE", 300, "WRITE")
        for n in range(sent):
            await sender.group_send("room", {"type": "n", "n": n})
        await sender.close()
        assert not sender.counters, sender.counters

    ready = threading.Event()
    receiving = threading.Thread(target=lambda: asyncio.run(receive()))
    receiving.start()
    assert ready.wait(10)
    asyncio.run(publish())  # a loop of its own: closed, as an async_to_sync call's would be
    receiving.join(15)
    assert len(received) == sent, (len(received), received[-3:])
    assert received == list(range(sent))
