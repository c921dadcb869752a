"""History groups on real Redis and NATS servers: what the conformance suite cannot do
generically — connections cut mid-stream, a broker restarted without persistence (and NATS with
its stream kept), sends while it is down, closing right after a burst, sync callers, a Sentinel
failover."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
from functools import partial
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos._core import history_writer
from channels_neffos.channel_layer import NeffosChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer
from channels_neffos.testing.conformance import eventually, receive_within

from .support.proxy import TcpProxy
from .support.redis_sentinel import RedisSentinelGroup

HISTORY = {"h-*": {"size": 10_000, "ttl": 60}}


def _layer(url: str, prefix: str, **options: Any) -> NeffosChannelLayer:
    if url.startswith("nats://"):
        return NatsChannelLayer(servers=[url], prefix=prefix, history=HISTORY, **options)
    return RedisChannelLayer(hosts=[url], prefix=prefix, history=HISTORY, **options)


@pytest.fixture(params=["redis", "nats"])
def server(request: pytest.FixtureRequest) -> BrokerProcess:
    """The session's Redis, or its NATS server."""
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


@pytest.fixture(params=["redis", "nats"])
def fresh_server(request: pytest.FixtureRequest) -> BrokerProcess:
    """A server of this test's own, to kill and restart."""
    return request.getfixturevalue(f"fresh_{request.param}_server")  # type: ignore[no-any-return]


def _tcp_url(server: BrokerProcess, port: int) -> str:
    scheme = "nats" if isinstance(server, NatsServer) else "redis"
    return f"{scheme}://127.0.0.1:{port}"


def _restart_without_persistence(server: BrokerProcess) -> None:
    """Restart ``server`` with nothing of what it stored (Redis keeps nothing on disk here;
    NATS loses its JetStream directory)."""
    if isinstance(server, NatsServer):
        server.kill()
        store = server.workdir / "jetstream"
        if store.exists():
            shutil.rmtree(store)  # errors raised, not ignored: the store must be gone
        server.start()
    else:
        server.restart()


def _more_than(received: list[Any], count: int) -> bool:
    return len(received) > count


async def _sender_and_member(
    url: str, prefix: str, group: str
) -> tuple[NeffosChannelLayer, NeffosChannelLayer, str]:
    """A sending instance, and another with one member of ``group``."""
    sender, receiver = _layer(url, prefix), _layer(url, prefix)
    channel = await receiver.new_channel()
    await receiver.group_add(group, channel)
    return sender, receiver, channel


def _group() -> str:
    return "h-" + secrets.token_hex(4)


async def _written(layer: NeffosChannelLayer, group: str, count: int) -> None:
    async def done() -> bool:
        return (await layer.group_history(group)).offset >= count

    await eventually(done, what=f"{count} messages in the history of {group}")


@pytest.mark.asyncio
async def test_a_receiver_whose_connection_is_cut_mid_stream_gets_everything_once_in_order(
    server: BrokerProcess,
) -> None:
    """The receiver reaches Redis through a proxy that resets its connections twice while a
    sender (untouched) streams 600 messages: what was published meanwhile is read from history
    and delivered in its place — every message once, in offset order, no gap."""
    prefix = "cut" + secrets.token_hex(4)
    group = _group()
    total = 600
    async with TcpProxy(server.port) as proxy:
        receiver = _layer(_tcp_url(server, proxy.port), prefix, capacity=total)
        sender = _layer(_tcp_url(server, server.port), prefix)
        channel = await receiver.new_channel()
        await receiver.group_add(group, channel)
        received: list[dict[str, Any]] = []

        async def receive() -> None:
            while len(received) < total:
                received.append(await receive_within(receiver, channel, timeout=20))

        receiving = asyncio.ensure_future(receive())
        for n in range(total):
            await sender.group_send(group, {"type": "m", "n": n})
            if n in (200, 400):
                await eventually(partial(_more_than, received, n - 50), what="the stream flowing")
                proxy.cut()
            if n % 20 == 0:
                await asyncio.sleep(0.005)  # a steady stream, not one burst
        await asyncio.wait_for(receiving, 30)
        assert [m["n"] for m in received] == list(range(total))
        assert [m["__position__"]["offset"] for m in received] == list(range(1, total + 1))
        assert not any(m["__position__"].get("gap") for m in received)
        assert receiver.counters["connection_lost"] >= 1
        assert receiver.counters["history_gap"] == 0
        assert sender.counters["history_unwritten"] == 0
        await receiver.close()
        await sender.close()


@pytest.mark.asyncio
async def test_a_broker_restarted_without_persistence_starts_a_new_epoch_and_members_are_told(
    fresh_server: BrokerProcess,
) -> None:
    group = _group()
    sender, receiver, channel = await _sender_and_member(
        fresh_server.url, "epoch" + secrets.token_hex(4), group
    )
    for n in range(3):
        await sender.group_send(group, {"type": "m", "n": n})
    before = [await receive_within(receiver, channel) for _ in range(3)]
    old_epoch = before[0]["__position__"]["epoch"]

    _restart_without_persistence(fresh_server)  # streams and positions are gone
    await eventually(
        lambda: min(layer.counters["connection_restored"] for layer in (sender, receiver)) >= 1,
        timeout=20,
        what="both instances back",
    )

    async def sent_after_restart() -> bool:
        await sender.group_send(group, {"type": "m", "n": 3})
        await asyncio.sleep(0.01)  # the append leaves at the end of the turn
        return bool((await receiver.group_history(group)).offset >= 1)

    await eventually(sent_after_restart, timeout=20, what="a send after the restart")
    after = await receive_within(receiver, channel, timeout=10)
    position = after["__position__"]
    assert position["epoch"] != old_epoch
    assert position["gap"] is True  # what happened to the old epoch's end is unknown
    assert receiver.counters["history_gap"] >= 1
    found = await receiver.group_history(group, since=before[-1]["__position__"])
    assert not found.recovered
    await sender.close()
    await receiver.close()


@pytest.mark.asyncio
async def test_sends_while_the_broker_is_down_are_written_once_it_is_back(
    fresh_server: BrokerProcess,
) -> None:
    prefix = "down" + secrets.token_hex(4)
    group = _group()
    sender = _layer(fresh_server.url, prefix)
    await sender.group_send(group, {"type": "m", "n": 0})
    await _written(sender, group, 1)
    fresh_server.kill()
    await eventually(lambda: sender.counters["connection_lost"] >= 1, what="the loss noticed")
    for n in range(1, 6):
        await sender.group_send(group, {"type": "m", "n": n})  # kept: the broker is down
    fresh_server.start()
    await eventually(lambda: sender.counters["connection_restored"] >= 1, what="reconnected")

    async def kept_ones_written() -> bool:
        found = await sender.group_history(group)
        return [m["n"] for m in found.messages][-5:] == [1, 2, 3, 4, 5]

    await eventually(kept_ones_written, what="the five kept sends in history, in order")
    assert sender.counters["history_unwritten"] == 0
    await sender.close()


@pytest.mark.asyncio
async def test_a_member_gets_what_was_sent_while_the_broker_was_down(
    fresh_server: BrokerProcess,
) -> None:
    """The sender keeps its sends during the outage and appends them once it is back — before
    or after the member's process has subscribed again; on Redis (no persistence here) they
    start a new epoch. Either way the member gets them all, in order (the first one marked if
    the epoch is new), and nothing twice."""
    prefix = "down" + secrets.token_hex(4)
    group = _group()
    sender, receiver, channel = await _sender_and_member(fresh_server.url, prefix, group)
    await sender.group_send(group, {"type": "m", "n": 0})
    assert (await receive_within(receiver, channel))["n"] == 0
    fresh_server.kill()
    await eventually(
        lambda: min(layer.counters["connection_lost"] for layer in (sender, receiver)) >= 1,
        what="the loss noticed",
    )
    for n in range(1, 21):
        await sender.group_send(group, {"type": "m", "n": n})
    fresh_server.start()
    got = [await receive_within(receiver, channel, timeout=20) for _ in range(20)]
    assert [m["n"] for m in got] == list(range(1, 21))
    new_epoch = not isinstance(fresh_server, NatsServer)
    assert [m["__position__"].get("gap", False) for m in got] == [new_epoch] + [False] * 19
    assert sender.counters["history_unwritten"] == 0
    await sender.close()
    await receiver.close()


async def _sent_while_down(server: BrokerProcess, count: int) -> NeffosChannelLayer:
    """A sender that wrote one message to a history group, then sent ``count`` more to it
    once ``server`` was killed (so they wait for it)."""
    group = _group()
    sender = _layer(server.url, "down" + secrets.token_hex(4))
    await sender.group_send(group, {"type": "m"})
    await _written(sender, group, 1)
    server.kill()
    await eventually(lambda: sender.counters["connection_lost"] >= 1, what="the loss noticed")
    for _ in range(count):
        await sender.group_send(group, {"type": "m"})
    return sender


@pytest.mark.asyncio
async def test_sends_kept_longer_than_the_patience_are_dropped_and_counted(
    fresh_server: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_writer, "OUTAGE_PATIENCE", 0.3)
    sender = await _sent_while_down(fresh_server, 5)
    await eventually(lambda: sender.counters["history_unwritten"] == 5, what="five counted")
    await sender.close()
    assert sender.counters["history_unwritten"] == 5  # not counted twice at close


@pytest.mark.asyncio
async def test_closing_while_sends_wait_for_the_broker_counts_them(
    fresh_server: BrokerProcess,
) -> None:
    sender = await _sent_while_down(fresh_server, 3)
    await sender.close()
    assert sender.counters["history_unwritten"] == 3


@pytest.mark.asyncio
async def test_closing_right_after_a_burst_writes_the_burst(server: BrokerProcess) -> None:
    prefix = "burst" + secrets.token_hex(4)
    group = _group()
    sender = _layer(server.url, prefix)
    for n in range(2_000):
        await sender.group_send(group, {"type": "m", "n": n})
    await sender.close()
    reader = _layer(server.url, prefix)
    found = await reader.group_history(group)
    assert found.offset == 2_000
    assert [m["n"] for m in found.messages] == list(range(2_000))
    assert sender.counters["history_unwritten"] == 0
    await reader.close()


def test_sync_callers_send_to_history_groups(server: BrokerProcess) -> None:
    """From views and Celery tasks (a new event loop per call, in other threads, whose tasks
    ``async_to_sync`` cancels before the loop closes: NATS finishes on a connection of its
    own)."""
    prefix = "sync" + secrets.token_hex(4)
    group = _group()
    layer = _layer(server.url, prefix)

    def view(n: int) -> None:
        async_to_sync(layer.group_send)(group, {"type": "m", "n": n})

    threads = [threading.Thread(target=view, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = async_to_sync(layer.group_history)(group)
    assert found.offset == 10
    assert sorted(m["n"] for m in found.messages) == list(range(10))
    assert layer.counters["history_unwritten"] == layer.counters["unconfirmed"] == 0


@pytest.mark.asyncio
async def test_a_graceful_sentinel_failover_keeps_the_epoch_and_the_order(
    fresh_redis_sentinel: RedisSentinelGroup,
) -> None:
    """The replica had every message (a graceful failover waits for it): the new master goes on
    with the same epoch and the next offsets, and the member, which follows the master, misses
    nothing and is told of no gap."""
    prefix = "sentinel" + secrets.token_hex(4)
    group = _group()
    entry = fresh_redis_sentinel.hosts_entry()
    sender = RedisChannelLayer(hosts=[entry], prefix=prefix, history=HISTORY)
    receiver = RedisChannelLayer(hosts=[entry], prefix=prefix, history=HISTORY, capacity=1000)
    channel = await receiver.new_channel()
    await receiver.group_add(group, channel)
    for n in range(20):
        await sender.group_send(group, {"type": "m", "n": n})
    before = [await receive_within(receiver, channel) for _ in range(20)]
    fresh_redis_sentinel.failover()
    await asyncio.get_running_loop().run_in_executor(None, fresh_redis_sentinel.wait_for_failover)

    async def sent_to_the_new_master() -> bool:
        lost = ("history_unwritten", "unconfirmed", "demoted")
        before = sum(sender.counters[reason] for reason in lost)
        await sender.group_send(group, {"type": "m", "n": 20})
        await asyncio.sleep(0.05)
        return sum(sender.counters[reason] for reason in lost) == before

    await eventually(sent_to_the_new_master, timeout=30, what="a send to the new master")
    after = await receive_within(receiver, channel, timeout=15)
    assert after["__position__"]["epoch"] == before[0]["__position__"]["epoch"]
    assert after["__position__"]["offset"] > 20
    assert not after["__position__"].get("gap")
    found = await receiver.group_history(group, since=before[-1]["__position__"])
    assert found.recovered
    assert receiver.counters["history_gap"] == 0
    await sender.close()
    await receiver.close()


@pytest.mark.asyncio
async def test_history_on_nats_outlives_a_server_restart(fresh_nats_server: NatsServer) -> None:
    """The stream is on disk: after a restart the group goes on in the same epoch, and a reader
    gets everything since a position from before."""
    prefix = "keep" + secrets.token_hex(4)
    group = _group()
    layer = _layer(fresh_nats_server.url, prefix)
    for n in range(5):
        await layer.group_send(group, {"type": "m", "n": n})
    await _written(layer, group, 5)
    before = await layer.group_history(group)
    fresh_nats_server.restart()
    await eventually(lambda: layer.counters["connection_restored"] >= 1, timeout=20)
    found = await layer.group_history(group, since=before.messages[1]["__position__"])
    assert found.epoch == before.epoch and found.recovered
    assert [m["n"] for m in found.messages] == [2, 3, 4]
    await layer.group_send(group, {"type": "m", "n": 5})
    await _written(layer, group, 6)
    assert (await layer.group_history(group)).epoch == before.epoch
    await layer.close()


@pytest.mark.asyncio
async def test_history_rewritten_under_delivered_offsets_is_told_not_dropped(
    redis_server: BrokerProcess,
) -> None:
    """Redis replicates asynchronously: a replica promoted after a crash may lack the last
    appends, and the next appends take their offsets again. The receiver already delivered those
    offsets; the new messages under them must reach the member, marked as a gap and counted —
    before, they were dropped as duplicates, silently. The failover's outcome is made here on a
    real Redis: the group's last three messages removed, its offset set back by three."""
    import redis as redis_py

    prefix = "rewrite" + secrets.token_hex(4)
    group = _group()
    sender, receiver, channel = await _sender_and_member(redis_server.url, prefix, group)
    for n in range(10):
        await sender.group_send(group, {"type": "m", "n": n})
    before = [await receive_within(receiver, channel) for _ in range(10)]
    assert before[-1]["__position__"]["offset"] == 10
    client = redis_py.Redis.from_url(redis_server.url)
    stream = f"{prefix}:h:{group}"
    client.xdel(stream, "8-0", "9-0", "10-0")
    client.execute_command("XSETID", stream, "7-0")  # as on a replica that never had them
    client.hincrby(f"{stream}:m", "o", -3)
    client.close()
    for n in (100, 101):
        await sender.group_send(group, {"type": "m", "n": n})
    after = [await receive_within(receiver, channel) for _ in range(2)]
    assert [m["n"] for m in after] == [100, 101]
    assert [m["__position__"]["offset"] for m in after] == [8, 9]
    assert after[0]["__position__"]["gap"] is True and "gap" not in after[1]["__position__"]
    assert receiver.counters["history_gap"] == 3
    await sender.close()
    await receiver.close()
