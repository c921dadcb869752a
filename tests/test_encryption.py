"""``symmetric_encryption_keys``: what crosses the broker is sealed, keys rotate, bad keys drop.

Every case runs on real Redis and NATS servers: a raw client of the broker checks what the broker
really carries; the whole conformance suite also runs encrypted (tests/test_conformance.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
import pytest_asyncio
import redis.asyncio
from cryptography.fernet import Fernet

from channels_neffos import MessageTooLarge, NatsChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer
from channels_neffos.testing.conformance import (
    LayerSpec,
    eventually,
    receive_within,
    unique_prefix,
)

OLD, NEW = "old-secret-7d1f0c", "new-secret-a94b22"
MARKER = "plaintext-marker-5b2e"


def fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


@pytest.fixture(params=["redis", "nats"])
def spec(request: pytest.FixtureRequest) -> LayerSpec:
    base: LayerSpec = request.getfixturevalue(f"{request.param}_spec")
    return LayerSpec(base.backend, {**base.config, "symmetric_encryption_keys": [OLD]})


class RawTap:
    """Every payload the broker carries under a prefix, as a plain client of the broker sees it."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._close: Any = None

    async def start(self, spec: LayerSpec, url: str) -> None:
        prefix = spec.config["prefix"]
        if "hosts" in spec.config:
            client = redis.asyncio.Redis.from_url(url)
            pubsub = client.pubsub()
            await pubsub.psubscribe(**{f"{prefix}:*": self._redis_message})
            task = asyncio.ensure_future(pubsub.run())

            async def close_redis() -> None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await pubsub.aclose()
                await client.aclose()

            self._close = close_redis
        else:
            connection = await nats.connect(url)

            async def on_message(msg: Any) -> None:
                # nats-py's JetStream API answers (presence's registry: process ids, nothing
                # of the application) come back under the prefix too; they are no layer traffic.
                if not msg.subject.startswith(f"{prefix}._INBOX."):
                    self.payloads.append(msg.data)

            await connection.subscribe(f"{prefix}.>", cb=on_message)
            await connection.flush()
            self._close = connection.close

    async def _redis_message(self, message: dict[str, Any]) -> None:
        self.payloads.append(message["data"])

    async def close(self) -> None:
        await self._close()


@pytest_asyncio.fixture
async def tap(
    spec: LayerSpec, redis_server: BrokerProcess, nats_server: BrokerProcess
) -> AsyncIterator[RawTap]:
    tap = RawTap()
    await tap.start(spec, redis_server.url if "hosts" in spec.config else nats_server.url)
    yield tap
    await tap.close()


@pytest.mark.asyncio
async def test_the_broker_carries_only_sealed_payloads_that_the_first_key_opens(
    spec: LayerSpec, tap: RawTap
) -> None:
    sender, receiver = spec.build(), spec.build()
    channel = await receiver.new_channel()
    await receiver.group_add("sealed-group", channel)
    await sender.send(channel, {"type": "t", "text": MARKER})
    await sender.group_send("sealed-group", {"type": "t", "text": MARKER})
    for _ in range(2):
        assert (await receive_within(receiver, channel))["text"] == MARKER
    await eventually(lambda: len(tap.payloads) >= 2, what="the tap's copies")  # may trail
    assert len(tap.payloads) == 2
    for payload in tap.payloads:
        assert MARKER.encode() not in payload and b"sealed-group" not in payload
        opened = msgpack.unpackb(fernet(OLD).decrypt(payload), raw=False)
        assert opened[0] == 1  # a whole version-1 envelope was inside: names, pid and body
        assert MARKER.encode() in opened[4]


@pytest.mark.asyncio
async def test_worker_channel_queue_items_are_sealed(
    redis_spec: LayerSpec, redis_server: BrokerProcess
) -> None:
    spec = LayerSpec(redis_spec.backend, {**redis_spec.config, "symmetric_encryption_keys": [OLD]})
    sender, receiver = spec.build(), spec.build()
    await sender.send("jobs", {"type": "job", "text": MARKER})
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        (stored,) = await client.lrange(f"{spec.config['prefix']}:q:jobs", 0, -1)
    finally:
        await client.aclose()
    assert MARKER.encode() not in stored
    assert MARKER.encode() in fernet(OLD).decrypt(stored)
    assert (await receive_within(receiver, "jobs"))["text"] == MARKER


@pytest.mark.asyncio
async def test_send_group_and_ask_work_across_instances_encrypted(spec: LayerSpec) -> None:
    asker, answerer = spec.build(), spec.build()
    channel = await answerer.new_channel()
    await answerer.group_add("g", channel)

    async def answer() -> None:
        request = await receive_within(answerer, channel)
        await answerer.reply(request, {"echo": request["text"]})

    responder = asyncio.ensure_future(answer())
    assert await asyncio.wait_for(asker.ask(channel, {"type": "q", "text": "hi"}), 5) == {
        "echo": "hi"
    }
    await responder
    await asker.group_send("g", {"type": "t", "n": 1})
    assert (await receive_within(answerer, channel))["n"] == 1
    assert asker.counters["undecryptable"] == answerer.counters["undecryptable"] == 0


async def exchange(first: Any, second: Any) -> None:
    """Each layer sends one message to the other's channel; both must arrive."""
    one, two = await first.new_channel(), await second.new_channel()
    await first.send(two, {"type": "t", "from": "first"})
    await second.send(one, {"type": "t", "from": "second"})
    assert (await receive_within(second, two))["from"] == "first"
    assert (await receive_within(first, one))["from"] == "second"


@pytest.mark.asyncio
async def test_keys_rotate_without_losing_a_message_at_any_step(spec: LayerSpec) -> None:
    """The documented procedure: add the new key second, then move it first, then drop the old.
    At every step, processes still on the previous step and those on the next talk both ways."""
    steps = [[OLD], [OLD, NEW], [NEW, OLD], [NEW]]
    for before, after in itertools.pairwise(steps):
        await exchange(
            spec.build(symmetric_encryption_keys=before),
            spec.build(symmetric_encryption_keys=after),
        )


@pytest.mark.asyncio
async def test_a_message_no_key_opens_is_dropped_counted_and_logged_without_the_key(
    spec: LayerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = spec.build()
    stranger = spec.build(symmetric_encryption_keys=[NEW])
    channel = await receiver.new_channel()
    await receiver.group_add("g", channel)
    with caplog.at_level(logging.DEBUG):
        await stranger.send(channel, {"type": "t", "n": 0})
        await stranger.group_send("g", {"type": "t", "n": 0})
        for _ in range(50):
            if receiver.counters["undecryptable"] >= 2:
                break
            await asyncio.sleep(0.05)
    assert receiver.counters["undecryptable"] == 2
    assert "undecryptable" in caplog.text or "could decrypt" in caplog.text
    for secret in (OLD, NEW):
        assert secret not in caplog.text
    # The reader survived: a message with the right key still arrives.
    await spec.build().send(channel, {"type": "t", "n": 1})
    assert (await receive_within(receiver, channel))["n"] == 1


@pytest.mark.asyncio
async def test_an_unencrypted_peer_is_dropped_both_ways(spec: LayerSpec) -> None:
    plain_config = {k: v for k, v in spec.config.items() if k != "symmetric_encryption_keys"}
    sealed, plain = spec.build(), LayerSpec(spec.backend, plain_config).build()
    sealed_channel, plain_channel = await sealed.new_channel(), await plain.new_channel()
    await plain.send(sealed_channel, {"type": "t"})
    await sealed.send(plain_channel, {"type": "t"})
    for _ in range(50):
        if sealed.counters["undecryptable"] and plain.counters["garbage"]:
            break
        await asyncio.sleep(0.05)
    assert sealed.counters["undecryptable"] == 1
    assert plain.counters["garbage"] == 1  # a token is no envelope: dropped and counted


@pytest.mark.parametrize(
    "keys",
    ["one-string", b"bytes", [], (), [""], [None], ["ok", 3], {"k": "v"}, 42],
)
def test_invalid_keys_raise_type_error_that_shows_no_key(keys: object) -> None:
    with pytest.raises(TypeError, match="symmetric_encryption_keys") as raised:
        NatsChannelLayer(symmetric_encryption_keys=keys)
    assert "one-string" not in str(raised.value)
    assert "ok" not in str(raised.value).replace("symmetric", "").replace("token", "")


@pytest.mark.asyncio
async def test_no_key_in_any_repr(spec: LayerSpec) -> None:
    layer = spec.build()
    await layer.new_channel()
    process = next(iter(layer._routers.values()))
    shown = repr(layer) + repr(process) + repr(process.transport) + repr(vars(layer))
    derived = base64.urlsafe_b64encode(hashlib.sha256(OLD.encode()).digest()).decode()
    assert OLD not in shown and derived not in shown
    assert layer.encrypted and "Encrypted" in repr(process.transport)


@pytest.mark.asyncio
async def test_largest_message_shrinks_to_what_still_fits_sealed() -> None:
    """A message that fits the broker in clear but not once sealed fails with MessageTooLarge
    before it reaches the broker (the broker would close the connection on NATS)."""
    with NatsServer(config="max_payload: 8KB") as server:
        prefix = unique_prefix()
        plain = NatsChannelLayer(servers=[server.url], prefix=prefix)
        sealed = NatsChannelLayer(
            servers=[server.url], prefix=prefix, symmetric_encryption_keys=[OLD]
        )
        body = {"data": os.urandom(7 * 1024)}
        owner = NatsChannelLayer(servers=[server.url], prefix=prefix)
        remote = await owner.new_channel()
        await plain.send(remote, body)  # fits in clear
        with pytest.raises(MessageTooLarge):
            await sealed.send(remote, body)
        await sealed.send(remote, {"data": os.urandom(5 * 1024)})  # fits sealed
        assert sealed.counters["broker_down"] == 0
        for layer in (plain, sealed, owner):
            await layer.close()
