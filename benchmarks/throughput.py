"""Send→receive throughput between two layer instances (so every message crosses the broker).

One producer loop does ``await sender.send(channel, message)`` ``count`` times while a consumer
task on a second layer instance receives them all; the rate is messages/s from the first send to
the last receive. The same loop runs against every layer given, on the same broker, in one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

MESSAGE = {"type": "bench.message", "text": "x" * 80}  # ~120 bytes msgpack-encoded


async def send_receive_rate(make_layer: Callable[[], Any], count: int) -> float:
    sender, receiver = make_layer(), make_layer()
    channel = await receiver.new_channel()
    await sender.send(channel, MESSAGE)  # connect both sides before timing
    await receiver.receive(channel)

    async def consume() -> None:
        for _ in range(count):
            await receiver.receive(channel)

    consumer = asyncio.ensure_future(consume())
    started = time.perf_counter()
    for _ in range(count):
        await sender.send(channel, MESSAGE)
        if consumer.done():
            break
    await asyncio.wait_for(consumer, 120)
    elapsed = time.perf_counter() - started
    for layer in (sender, receiver):
        close = getattr(layer, "close", None)
        if close is not None:
            await close()
    return count / elapsed


def layer_factories(redis_url: str, nats_url: str) -> dict[str, Callable[[], Any]]:
    from channels_neffos import NatsChannelLayer, RedisChannelLayer

    factories: dict[str, Callable[[], Any]] = {
        "channels_neffos Redis": lambda: RedisChannelLayer(hosts=[redis_url], capacity=100_000),
        "channels_neffos NATS": lambda: NatsChannelLayer(servers=[nats_url], capacity=100_000),
    }
    try:
        from channels_redis.core import RedisChannelLayer as CoreLayer
        from channels_redis.pubsub import RedisPubSubChannelLayer
    except ImportError:
        return factories
    factories["channels_redis pubsub"] = lambda: RedisPubSubChannelLayer(hosts=[redis_url])
    factories["channels_redis core"] = lambda: CoreLayer(hosts=[redis_url], capacity=100_000)
    return factories
