"""Ask round trips: sequential asks/s and asks/s with ``concurrency`` asks in flight.

The asker and the responder are separate layer instances (separate processes to the layer), so
every ask crosses the broker twice. The anchor is raw nats-py request/reply on the same server:
``nc.request()`` against a subscription that answers with ``msg.respond()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats

QUESTION = {"type": "bench.question", "text": "x" * 80}
ANSWER = {"text": "y" * 80}


async def _timed(asks: int, concurrency: int, ask_once: Callable[[], Any]) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await ask_once()

    per_worker = asks // concurrency
    started = time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - started)


async def layer_ask_rate(make_layer: Callable[[], Any], asks: int, concurrency: int) -> float:
    asker, responder = make_layer(), make_layer()
    channel = await responder.new_channel()

    async def respond() -> None:
        while True:
            request = await responder.receive(channel)
            await responder.reply(request, ANSWER)

    responding = asyncio.ensure_future(respond())
    try:
        await asker.ask(channel, QUESTION)  # connect both sides before timing
        return await _timed(asks, concurrency, lambda: asker.ask(channel, QUESTION, timeout=30))
    finally:
        responding.cancel()
        await asyncio.gather(responding, return_exceptions=True)
        await asker.close()
        await responder.close()


async def raw_nats_request_rate(url: str, asks: int, concurrency: int) -> float:
    import msgpack

    question = msgpack.packb(QUESTION)
    answer = msgpack.packb(ANSWER)
    responder, asker = await nats.connect(url), await nats.connect(url)

    async def respond(msg: Any) -> None:
        msgpack.unpackb(msg.data)
        await msg.respond(answer)

    await responder.subscribe("bench.ask", cb=respond)
    await responder.flush()

    async def ask_once() -> None:
        reply = await asker.request("bench.ask", question, timeout=30)
        msgpack.unpackb(reply.data)

    try:
        await ask_once()
        return await _timed(asks, concurrency, ask_once)
    finally:
        await asker.close()
        await responder.close()
