"""Redis Cluster (``cluster=True``): sharded pub/sub spread over the primaries (the default) or
classic pub/sub through one node; worker channels by hash slot in both."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as redis_asyncio

from channels_neffos import BrokerUnavailable, RedisChannelLayer
from channels_neffos.testing.brokers import RedisCluster, RedisServer, free_port


async def node_counts(urls: list[str], *command: str) -> list[int]:
    """One integer answer per node, e.g. ``PUBSUB NUMPAT`` (which counts that node only)."""
    counts = []
    for url in urls:
        client = redis_asyncio.from_url(url)
        try:
            counts.append(int(await client.execute_command(*command)))
        finally:
            await client.aclose()
    return counts


@pytest.mark.asyncio
async def test_classic_processes_on_different_nodes_meet_and_worker_lists_spread(
    redis_cluster: RedisCluster,
) -> None:
    def layer() -> RedisChannelLayer:
        return RedisChannelLayer(
            hosts=redis_cluster.urls, cluster=True, cluster_pubsub="classic", prefix="spread"
        )

    layers, channels = [], []
    while min(await node_counts(redis_cluster.urls, "PUBSUB", "NUMPAT")) == 0:
        assert len(layers) < 40, "every process subscribed on the same node"
        layers.append(layer())
        channels.append(await layers[-1].new_channel())
    for sender in layers:  # the cluster bus carries every PUBLISH to every node
        for channel in channels:
            await sender.send(channel, {"type": "hello"})
    for receiver, channel in zip(layers, channels, strict=True):
        for _ in layers:
            assert (await asyncio.wait_for(receiver.receive(channel), 5))["type"] == "hello"

    for n in range(30):
        await layers[0].send(f"work-{n}", {"type": "job", "n": n})
    assert all(keys > 0 for keys in await node_counts(redis_cluster.urls, "DBSIZE"))
    for n in range(30):
        job = await asyncio.wait_for(layers[-1].receive(f"work-{n}"), 5)
        assert job["n"] == n
    await layers[0].flush()
    for receiver in layers:
        await receiver.close()


@pytest.mark.asyncio
async def test_startup_skips_dead_seeds_and_fails_only_if_all_are(
    redis_cluster: RedisCluster,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    layer = RedisChannelLayer(hosts=[dead, *redis_cluster.urls], cluster=True, prefix="seeds")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "up"})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "up"
    await layer.close()
    nowhere = RedisChannelLayer(hosts=[dead, dead], cluster=True)
    with pytest.raises(BrokerUnavailable, match="cluster"):
        await nowhere.new_channel()


@pytest.mark.asyncio
async def test_classic_subscriptions_move_to_another_node_when_theirs_dies() -> None:
    with RedisCluster() as cluster:  # private: one of its nodes gets killed
        options = {"hosts": cluster.urls, "cluster": True, "cluster_pubsub": "classic"}
        receiver = RedisChannelLayer(**options, prefix="move")
        sender = RedisChannelLayer(**options, prefix="move")
        channel = await receiver.new_channel()
        patterns = await node_counts(cluster.urls, "PUBSUB", "NUMPAT")
        assert sorted(patterns) == [0, 0, 1]
        home: RedisServer = cluster.primaries[patterns.index(1)]
        home.kill()
        arrived = None
        for attempt in range(100):  # what is published while it resubscribes is lost
            with contextlib.suppress(BrokerUnavailable, ConnectionError):
                await sender.send(channel, {"type": "try", "n": attempt})
            try:
                arrived = await asyncio.wait_for(receiver.receive(channel), 0.1)
                break
            except asyncio.TimeoutError:
                continue
        assert arrived is not None, "the receiver never subscribed again on another node"
        await sender.send(channel, {"type": "after"})
        while (await asyncio.wait_for(receiver.receive(channel), 5))["type"] != "after":
            pass
        live = [node.url for node in cluster.primaries if node is not home]
        assert sum(await node_counts(live, "PUBSUB", "NUMPAT")) == 1

        await receiver.close()
        await sender.close()


def test_cluster_takes_urls_only() -> None:
    with pytest.raises(TypeError, match="URL"):
        RedisChannelLayer(hosts=[{"host": "localhost"}], cluster=True)
    with pytest.raises(TypeError, match="URL"):
        RedisChannelLayer(hosts=["unix:///tmp/redis.sock"], cluster=True)
    with pytest.raises(TypeError, match="True or False"):
        RedisChannelLayer(cluster="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'sharded', 'classic'"):
        RedisChannelLayer(cluster=True, cluster_pubsub="broadcast")
    with pytest.raises(TypeError, match="cluster=True"):
        RedisChannelLayer(cluster_pubsub="classic")
