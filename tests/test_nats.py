"""NATS-specific behaviour: subject escaping, payload limit, startup errors, configuration."""

from __future__ import annotations

import asyncio
import os

import channels.exceptions
import pytest

from channels_neffos import BrokerUnavailable, MessageTooLarge, NatsChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, free_port
from channels_neffos.testing.conformance import LayerSpec, eventually
from channels_neffos.transports.base import Subject
from channels_neffos.transports.nats import USER_CALLBACK_TIMEOUT, NatsTransport


def test_subjects_escape_empty_and_underscore_tokens_injectively() -> None:
    transport = NatsTransport(["nats://x"], {}, events=None)  # type: ignore[arg-type]
    names = ["a..b", "a._.b", ".lead", "_.lead", "trail.", "trail._", "_x", "__x", "x", "a.b"]
    subjects = [transport.subject("P", "g", name) for name in names]
    assert len(set(subjects)) == len(names)
    for subject in subjects:
        assert "" not in subject.split(".")
    assert transport.subject("P", "g", "chat.room-1") == "P.g.chat.room-1"
    assert transport.wildcard("P", "abc") == "P.abc.>"


@pytest.mark.asyncio
@pytest.mark.parametrize("group", ["a..b", ".lead", "trail.", "_under", "a._.b"])
async def test_awkward_group_names_cross_instances(nats_spec: LayerSpec, group: str) -> None:
    member, sender = nats_spec.build(), nats_spec.build()
    channel = await member.new_channel()
    await member.group_add(group, channel)
    await sender.group_send(group, {"type": "x", "group": group})
    assert (await asyncio.wait_for(member.receive(channel), 5))["group"] == group


@pytest.mark.asyncio
async def test_message_over_max_payload_raises_everywhere(nats_spec: LayerSpec) -> None:
    layer, other = nats_spec.build(), nats_spec.build()
    own = await layer.new_channel()
    remote = await other.new_channel()
    blob = os.urandom(2 * 1024 * 1024)
    for send in (layer.send(own, {"data": blob}), layer.send(remote, {"data": blob})):
        with pytest.raises(MessageTooLarge, match="max_payload"):
            await send
    with pytest.raises(channels.exceptions.MessageTooLarge):  # the exception Channels names
        await layer.group_send("g", {"data": blob})


@pytest.mark.asyncio
async def test_unreachable_server_at_startup_raises_broker_unavailable_naming_the_url() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    layer = NatsChannelLayer(servers=url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerUnavailable, match=url.replace(".", r"\.")):
        await layer.new_channel()
    assert loop.time() - started < 3


@pytest.mark.asyncio
@pytest.mark.parametrize("credentials", ["app:sentinel-secret-7", "sentinel-secret-7"])
async def test_credentials_in_a_server_url_are_never_shown(
    credentials: str, caplog: pytest.LogCaptureFixture
) -> None:
    layer = NatsChannelLayer(servers=[f"nats://{credentials}@127.0.0.1:{free_port()}"])
    with pytest.raises(BrokerUnavailable) as refused:
        await layer.new_channel()
    shown = f"{refused.value} {refused.value!r} {caplog.text}"
    assert "sentinel-secret-7" not in shown
    assert "***@127.0.0.1" in str(refused.value)


def test_servers_in_connect_options_are_refused() -> None:
    with pytest.raises(TypeError, match="'servers' option"):
        NatsChannelLayer(connect_options={"servers": ["nats://x"]})


@pytest.mark.asyncio
async def test_connect_options_reach_nats(fresh_nats_server: BrokerProcess) -> None:
    names: list[str] = []
    layer = NatsChannelLayer(servers=[fresh_nats_server.url], connect_options={"name": "my-app"})
    await layer.new_channel()
    process = layer._routers[asyncio.get_running_loop()]
    names.append(process.transport._client.options["name"])
    assert names == ["my-app"]


@pytest.mark.asyncio
async def test_worker_channel_overflow_is_dropped_and_counted(nats_spec: LayerSpec) -> None:
    """NATS can't tell a sender the reader is full: the reader drops beyond capacity, counted."""
    reader, sender = nats_spec.build(capacity=2), nats_spec.build()
    channel = "overflow"
    first = asyncio.ensure_future(reader.receive(channel))
    loop = asyncio.get_running_loop()

    def subscribed() -> bool:  # NATS drops what is sent to a queue nobody subscribes yet
        router = reader._routers.get(loop)
        return router is not None and bool(router.transport._queue_subscriptions)

    await eventually(subscribed, what="the reader's queue subscription")
    router = reader._routers[loop]
    await sender.send(channel, {"type": "x", "n": -1})
    await asyncio.wait_for(first, 5)
    # The fetcher stops pulling once nobody waits (within its 1 s pop).
    await eventually(lambda: not router.fetchers._tasks, what="the fetcher's end")
    for n in range(10):
        await sender.send(channel, {"type": "x", "n": n})
    await eventually(lambda: reader.counters["channel_full"] >= 7, what="7 drops")
    got = [(await asyncio.wait_for(reader.receive(channel), 5))["n"] for _ in range(2)]
    assert got == [0, 1]


@pytest.mark.asyncio
async def test_subscribe_returns_only_once_the_sub_is_on_the_wire(nats_spec: LayerSpec) -> None:
    """Regression: nats-py's flush() writes its PING straight to the socket, while a new SUB
    waits in the client's buffer for the flusher task. On a busy event loop the flusher ran
    late, PONG came back first, and messages published right after group_add were lost (seen
    in the conformance suite under load). Here the flusher is held back deterministically —
    something no real component does on demand — and subscribe() must wait for it."""
    layer = nats_spec.build()
    await layer.new_channel()
    process = layer._routers[asyncio.get_running_loop()]
    client = process.transport._client
    held = client._flush_queue
    client._flush_queue = asyncio.Queue()  # the flusher stays parked on the old queue...
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, held.put_nowait, loop.create_future())  # ...until this releases it
    await process.transport.subscribe(Subject("x.y", "x"), lambda payload: None)
    assert client._pending_data_size == 0, "subscribe() returned with the SUB still unsent"


@pytest.mark.asyncio
async def test_a_reader_waiting_on_a_worker_channel_gets_what_is_sent_after_flush(
    nats_spec: LayerSpec,
) -> None:
    reader, sender = nats_spec.build(), nats_spec.build()
    receiving = asyncio.ensure_future(reader.receive("jobs"))
    while not receiving.done():  # NATS keeps nothing for a channel nobody subscribed to yet
        await sender.send("jobs", {"n": 1})
        await asyncio.wait({receiving}, timeout=0.1)
    assert receiving.result()["n"] == 1
    receiving = asyncio.ensure_future(reader.receive("jobs"))  # waits, subscribed
    await asyncio.sleep(0.1)
    await reader.flush()
    await sender.send("jobs", {"n": 2})  # was lost: nobody subscribed for up to a second

    async def until_the_second() -> None:
        message = await receiving
        while message["n"] != 2:  # a repeat of the first that was still on its way
            message = await reader.receive("jobs")

    await asyncio.wait_for(until_the_second(), 3)
    await reader.close()
    await sender.close()


async def _down_and_buffering(layer: NatsChannelLayer, server: BrokerProcess) -> None:
    """Kill ``server`` and return once ``layer``'s nats-py client knows it is reconnecting."""
    process = layer._routers[asyncio.get_running_loop()]
    server.kill()
    deadline = asyncio.get_running_loop().time() + 10
    while process.transport._client.is_connected:
        assert asyncio.get_running_loop().time() < deadline, "the loss went unnoticed"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_publishes_buffered_during_an_outage_are_counted_when_the_layer_closes(
    fresh_nats_server: BrokerProcess,
) -> None:
    """Regression: nats-py buffers publishes while it reconnects; closing the layer then lost
    them silently — and nats-py's close() wrote them to the dead socket and raised TypeError."""
    layer = NatsChannelLayer(servers=[fresh_nats_server.url])
    elsewhere = "specific." + "a" * 12 + "!x"  # a channel of another process
    await layer.new_channel()
    await _down_and_buffering(layer, fresh_nats_server)
    for n in range(5):
        await layer.send(elsewhere, {"type": "x", "n": n})  # buffered, no error
        await asyncio.sleep(0)  # one broker message each (the outbox coalesces a loop turn)
    assert layer.counters["broker_down"] == 0
    await layer.close()
    assert layer.counters["broker_down"] == 5


@pytest.mark.asyncio
async def test_publishes_buffered_when_nats_py_gives_up_are_counted(
    fresh_nats_server: BrokerProcess,
) -> None:
    """With a finite max_reconnect_attempts nats-py closes its client, dropping its buffer;
    the layer connects anew (and counts what was dropped)."""
    options = {"max_reconnect_attempts": 1, "reconnect_time_wait": 0.05}
    layer = NatsChannelLayer(servers=[fresh_nats_server.url], connect_options=options)
    elsewhere = "specific." + "a" * 12 + "!x"
    await layer.new_channel()
    await _down_and_buffering(layer, fresh_nats_server)
    for n in range(3):
        await layer.send(elsewhere, {"type": "x", "n": n})
        await asyncio.sleep(0)
    deadline = asyncio.get_running_loop().time() + 10
    while layer.counters["broker_down"] < 3:  # counted once nats-py gives up
        assert asyncio.get_running_loop().time() < deadline, dict(layer.counters)
        await asyncio.sleep(0.05)
    assert layer.counters["broker_down"] == 3
    await layer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("misbehaving", ["never returns", "raises"])
async def test_a_user_callback_cannot_hang_or_break_close(
    misbehaving: str, nats_server: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py awaits ``connect_options`` callbacks with no limit: a ``closed_cb`` that never
    returned made ``close()`` — and so the end of every ``async_to_sync`` call — hang forever,
    and one that raised made ``close()`` raise. Both are bounded and logged now."""

    async def closed_cb() -> None:
        if misbehaving == "raises":
            raise RuntimeError("the application's closed_cb failed")
        await asyncio.Event().wait()

    layer = NatsChannelLayer(servers=[nats_server.url], connect_options={"closed_cb": closed_cb})
    await layer.new_channel()  # connected
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(layer.close(), 10)  # before: hung (never returns) or raised
    assert asyncio.get_running_loop().time() - started < USER_CALLBACK_TIMEOUT + 2
    said = "did not return within" if misbehaving == "never returns" else "raised"
    assert f"the closed_cb in connect_options {said}" in caplog.text
