"""The raw limits the layers are measured against, on the same brokers.

* (i) redis-py: pipelined ``PUBLISH`` → ``PubSub.get_message()`` (with hiredis installed) — what
  redis-py's own pub/sub API can deliver to Python.
* (ii) the physical limit for Python: a plain asyncio socket holding a ``PSUBSCRIBE`` and parsing
  in bulk with ``hiredis.Reader``, fed by a pipelined publisher on another raw socket.
* (iii) nats-py publish → subscribe callback.
* (iv) nats-py request/reply (``nc.request`` against ``msg.respond``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import hiredis
import msgpack
import nats
import nats.errors
import redis.asyncio as redis_asyncio

PAYLOAD = msgpack.packb({"type": "bench.message", "text": "x" * 80, "n": 0})  # ~100 bytes
_BATCH = 1000


async def redis_py_pubsub_rate(url: str, count: int) -> float:
    """(i) messages/s through redis-py's PubSub API."""
    client = redis_asyncio.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("anchor:i")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    received = 0

    async def read() -> None:
        nonlocal received
        while received < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received += 1

    reading = asyncio.ensure_future(read())
    started = time.perf_counter()
    for start in range(0, count, _BATCH):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(_BATCH, count - start)):
            pipe.publish("anchor:i", PAYLOAD)
        await pipe.execute()
    await asyncio.wait_for(reading, 120)
    rate = count / (time.perf_counter() - started)
    await pubsub.aclose()
    await client.aclose()
    return rate


async def raw_socket_psubscribe_rate(url: str, count: int) -> float:
    """(ii) messages/s: raw sockets, PSUBSCRIBE, hiredis bulk parsing, pipelined PUBLISH."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    sub_reader, sub_writer = await asyncio.open_connection(host, port)
    pub_reader, pub_writer = await asyncio.open_connection(host, port)
    sub_writer.write(hiredis.pack_command((b"PSUBSCRIBE", b"anchor:ii:*")))
    parser = hiredis.Reader()
    while True:  # the psubscribe confirmation
        parser.feed(await sub_reader.read(65536))
        if parser.gets() is not False:
            break
    received = 0
    done = asyncio.get_running_loop().create_future()

    async def read() -> None:
        nonlocal received
        while received < count:
            parser.feed(await sub_reader.read(262144))
            while parser.gets() is not False:
                received += 1
        done.set_result(None)

    async def drain_publish_replies() -> None:
        replies = hiredis.Reader()
        seen = 0
        while seen < count:
            replies.feed(await pub_reader.read(262144))
            while replies.gets() is not False:
                seen += 1

    reading = asyncio.ensure_future(read())
    draining = asyncio.ensure_future(drain_publish_replies())
    started = time.perf_counter()
    for start in range(0, count, _BATCH):
        # Packed one by one, as any publisher of distinct messages must.
        batch = [
            hiredis.pack_command((b"PUBLISH", b"anchor:ii:x", PAYLOAD))
            for _ in range(min(_BATCH, count - start))
        ]
        pub_writer.write(b"".join(batch))
        await pub_writer.drain()
    await asyncio.wait_for(done, 120)
    rate = count / (time.perf_counter() - started)
    await asyncio.wait_for(draining, 30)
    await reading
    for writer in (sub_writer, pub_writer):
        writer.close()
    return rate


async def nats_pubsub_rate(url: str, count: int) -> float:
    """(iii) messages/s from nats-py publish to a nats-py subscription callback."""
    subscriber, publisher = await nats.connect(url), await nats.connect(url)
    received = 0
    done = asyncio.get_running_loop().create_future()

    async def on_message(msg: Any) -> None:
        nonlocal received
        msgpack.unpackb(msg.data)
        received += 1
        if received == count and not done.done():
            done.set_result(None)

    await subscriber.subscribe("anchor.iii", cb=on_message, pending_msgs_limit=count + 1)
    await subscriber.flush()
    started = time.perf_counter()
    for _ in range(count):
        await publisher.publish("anchor.iii", PAYLOAD)
    await publisher.flush()
    await asyncio.wait_for(done, 120)
    rate = count / (time.perf_counter() - started)
    await subscriber.close()
    await publisher.close()
    return rate


async def nats_request_reply(url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(iv) an ``ask_once`` coroutine function over nats-py request/reply, and a closer."""
    responder, asker = await nats.connect(url), await nats.connect(url)
    subject = f"anchor.iv.{secrets.token_hex(4)}"

    async def respond(msg: Any) -> None:
        msgpack.unpackb(msg.data)
        await msg.respond(PAYLOAD)

    await responder.subscribe(subject, cb=respond)
    await responder.flush()
    # nats-py's flush() PING can overtake the SUB still in its buffer (see transports/nats.py),
    # so the subscription may not be on the server yet: wait until a request gets through.
    for _ in range(100):
        try:
            await asker.request(subject, PAYLOAD, timeout=5)
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.02)

    async def ask_once() -> None:
        reply = await asker.request(subject, PAYLOAD, timeout=30)
        msgpack.unpackb(reply.data)

    async def close() -> None:
        await asker.close()
        await responder.close()

    return ask_once, close
