"""Workloads that run inside one process: (a) throughput, (b) round trips, (c) fan-out, (e) ask.

Unless a row says "same instance", the sending and receiving sides are separate layer instances,
so every message crosses the broker (local-first routing cannot skip it).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels_neffos.testing.conformance import LayerSpec

MESSAGE = {"type": "bench.message", "text": "x" * 80}  # ~120 bytes once encoded
ANSWER = {"text": "y" * 80}


async def _close(*layers: Any) -> None:
    for layer in layers:
        close = getattr(layer, "close", None)
        if close is not None:
            await close()


async def _connect(sender: Any, receiver: Any) -> str:
    """A channel on ``receiver``, with both sides connected before any timing starts."""
    channel = await receiver.new_channel()
    await sender.send(channel, MESSAGE)
    await asyncio.wait_for(receiver.receive(channel), 30)
    return channel


# -- (a) throughput ----------------------------------------------------------------------------


async def send_receive_rate(
    spec: LayerSpec,
    count: int,
    same_instance: bool = False,
    channels: int = 1,
    receivers: int = 1,
) -> float:
    """Messages/s: one producer loop of ``await send()``, one consumer task per channel.

    With ``channels`` > 1 the producer sends to each channel in turn; the channels are spread
    over ``receivers`` receiving instances (processes to the layer). Consecutive messages to
    channels of one receiving process still share frames (its one subscription takes them all);
    alternating between *processes*, no two consecutive messages can, and the rate shows the
    cost of one broker message per message.
    """
    receiving = [spec.build() for _ in range(receivers)]
    sender = receiving[0] if same_instance else spec.build()
    targets = []
    for index in range(channels):
        receiver = receiving[index % receivers]
        targets.append((receiver, await _connect(sender, receiver)))
    per_channel = count // channels

    received = [0] * channels

    async def consume(index: int, receiver: Any, channel: str) -> None:
        for _ in range(per_channel):
            await receiver.receive(channel)
            received[index] += 1

    consumers = [
        asyncio.ensure_future(consume(index, r, channel))
        for index, (r, channel) in enumerate(targets)
    ]
    started = time.perf_counter()
    for _ in range(per_channel):
        for _receiver, channel in targets:
            await sender.send(channel, MESSAGE)
    await _all_received(consumers, received, per_channel, [sender, *receiving])
    rate = per_channel * channels / (time.perf_counter() - started)
    await _close(sender, *(r for r in receiving if r is not sender))
    return rate


async def _all_received(
    consumers: list[asyncio.Future[None]], received: list[int], expected: int, layers: list[Any]
) -> None:
    """Wait for the consumers — 30 s plus 1 s per 5,000 messages, far above any rate measured
    here — or fail saying what is missing and what the layers counted (drops, reconnects)."""
    limit = 30 + expected * len(consumers) / 5000
    try:
        await asyncio.wait_for(asyncio.gather(*consumers), limit)
    except asyncio.TimeoutError:
        counters = [dict(getattr(layer, "counters", {})) for layer in layers]
        raise RuntimeError(
            f"not every message arrived within {limit:.0f} s: received {received} of "
            f"{expected} per channel; layer counters {counters}"
        ) from None


# -- (b) round trips ---------------------------------------------------------------------------


async def ping_pong_latency(spec: LayerSpec, round_trips: int) -> dict[str, float]:
    """p50/p99 milliseconds of send → receive → send back → receive, between two instances."""
    a, b = spec.build(), spec.build()
    channel_b = await _connect(a, b)
    channel_a = await _connect(b, a)

    async def echo() -> None:
        for _ in range(round_trips):
            message = await b.receive(channel_b)
            await b.send(channel_a, message)

    echoing = asyncio.ensure_future(echo())
    samples = []
    for _ in range(round_trips):
        started = time.perf_counter()
        await a.send(channel_b, MESSAGE)
        await asyncio.wait_for(a.receive(channel_a), 30)
        samples.append((time.perf_counter() - started) * 1000)
    await echoing
    await _close(a, b)
    return percentiles(samples)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


# -- (c) fan-out in one process ----------------------------------------------------------------


async def fan_out(spec: LayerSpec, members: int, deliveries: int) -> dict[str, float]:
    """Group of ``members`` channels in one instance; another instance group_sends.

    Returns deliveries/s (first send to last delivery) and group_send/s as the publisher sees
    it: one over the median time spent inside ``await group_send()``.
    """
    publisher, member_layer = spec.build(), spec.build()
    group = f"fanout{members}"
    channels = [await member_layer.new_channel() for _ in range(members)]
    for channel in channels:
        await member_layer.group_add(group, channel)
    await _connect(publisher, member_layer)
    sends = max(200, deliveries // members)
    remaining = sends * members
    all_delivered = asyncio.get_running_loop().create_future()

    async def drain(channel: str) -> None:
        nonlocal remaining
        for _ in range(sends):
            await member_layer.receive(channel)
            remaining -= 1
            if remaining == 0:
                all_delivered.set_result(time.perf_counter())

    draining = [asyncio.ensure_future(drain(channel)) for channel in channels]
    await asyncio.sleep(0.2)  # every member is receiving
    call_seconds = []
    started = time.perf_counter()
    for _ in range(sends):
        call_started = time.perf_counter()
        await publisher.group_send(group, MESSAGE)
        call_seconds.append(time.perf_counter() - call_started)
    finished = await asyncio.wait_for(all_delivered, 300)
    await asyncio.gather(*draining)
    await _close(publisher, member_layer)
    return {
        "deliveries_per_s": sends * members / (finished - started),
        # What a caller of group_send typically pays: the median time inside the awaited call,
        # which leaves out the members' delivery work (and its GC pauses) sharing this CPU.
        "group_sends_per_s": 1 / statistics.median(call_seconds),
    }


# -- (e) ask -----------------------------------------------------------------------------------


async def timed_asks(asks: int, concurrency: int, ask_once: Callable[[], Awaitable[Any]]) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await ask_once()

    per_worker = max(1, asks // concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - started)


async def layer_ask_rate(spec: LayerSpec, asks: int, concurrency: int) -> float:
    asker, responder = spec.build(), spec.build()
    channel = await responder.new_channel()

    async def respond() -> None:
        while True:
            request = await responder.receive(channel)
            await responder.reply(request, ANSWER)

    responding = asyncio.ensure_future(respond())
    try:
        await asker.ask(channel, MESSAGE)  # both sides connected before timing
        return await timed_asks(asks, concurrency, lambda: asker.ask(channel, MESSAGE, timeout=30))
    finally:
        responding.cancel()
        await asyncio.gather(responding, return_exceptions=True)
        await _close(asker, responder)
