"""Redis Sentinel: configuration, the conformance suite through sentinels, failovers under load.

Against real processes (:class:`~tests.support.redis_sentinel.RedisSentinelGroup`: a
master, a replica, three sentinels; ``down-after-milliseconds`` 1000):

* every guarantee of one server holds through sentinels (the conformance suite);
* ``hosts`` entries are checked when the layer is built, shown without secrets, shard as plain
  servers do, and refusals are named (no sentinel reachable, unknown master name);
* loss is never silent: PUBLISHes the broker never confirmed are counted as ``unconfirmed``, and
  those Redis says nobody received as ``no_subscriber`` (each test fails without its fix);
* a master demoted under the layer (``READONLY``) is left, and a replica is never settled on;
* under load — sends to a process channel, a group, a worker channel, and asks — a crashed
  master (SIGKILL) and a graceful ``SENTINEL FAILOVER``: every stream resumes through the new
  master within a measured bound (printed: run with ``-s``), and every message that did not
  arrive is counted or was raised to its sender, except what the module docstring of
  :mod:`channels_neffos.transports.sentinel` and the asserts below name.

The layers under load run in this process (one event loop); each stream has a sender layer of
its own, so that its counters speak for it alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from channels_neffos import (
    AskTimeout,
    BrokerUnavailable,
    NoResponders,
    RedisChannelLayer,
)
from channels_neffos._drops import REASONS
from channels_neffos.testing.brokers import BrokerProcess, RedisServer, free_port
from channels_neffos.testing.conformance import (
    HistoryCases,
    LayerSpec,
    NeffosLayerConformance,
    receive_within,
    unique_prefix,
)
from channels_neffos.transports.redis_connect import connection_source, host_secrets
from channels_neffos.transports.redis_sharded import ShardedRedisTransport
from tests.support.redis_sentinel import RedisSentinelGroup

#: "At once": a refusal must not wait for retries or timeouts.
PROMPT = 1.0


class TestRedisSentinelChannelLayer(NeffosLayerConformance, HistoryCases):
    """Everything a single server guarantees holds through sentinels (master + replica)."""

    @pytest.fixture
    def layer_spec(self, redis_sentinel: RedisSentinelGroup) -> LayerSpec:
        return LayerSpec(
            "channels_neffos.RedisChannelLayer",
            {"hosts": [redis_sentinel.hosts_entry()], "prefix": unique_prefix()},
        )

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


# -- configuration -----------------------------------------------------------------------------

SENTINELS = [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
SECRET = "S3ntinel-config-secret"


def entry(**changes: Any) -> dict[str, Any]:
    return {"sentinels": SENTINELS, "master_name": "mymaster", **changes}


@pytest.mark.parametrize(
    ("host", "error", "says"),
    [
        (entry(sentinels=[]), TypeError, "sentinels must be a non-empty list of (host, port)"),
        (entry(sentinels="127.0.0.1:26379"), TypeError, "non-empty list of (host, port) pairs"),
        (entry(sentinels=[("127.0.0.1",)]), TypeError, "a (host, port) pair such as"),
        (entry(sentinels=[("127.0.0.1", "26379")]), TypeError, "a (host, port) pair such as"),
        (entry(sentinels=[f"redis://:{SECRET}@h:1"]), TypeError, "got a str"),
        (entry(sentinels=[("", 26379)]), ValueError, "host must not be empty"),
        (entry(sentinels=[("127.0.0.1", 70000)]), ValueError, "port must be 1-65535"),
        ({"sentinels": SENTINELS}, TypeError, "needs 'master_name' too"),
        ({"master_name": "mymaster"}, TypeError, "needs 'sentinels' too"),
        (entry(master_name=""), ValueError, "master_name must not be empty"),
        (entry(master_name=7), TypeError, "master_name must be the name the sentinels monitor"),
        (entry(sentinel_kwargs=SECRET), TypeError, "sentinel_kwargs must be a dict"),
        (entry(host="10.0.0.1"), TypeError, "takes no 'host': the sentinels tell where"),
        (entry(address="redis://10.0.0.1"), TypeError, "takes no 'address'"),
        (entry(ssl_ca_certs="/ca.pem"), TypeError, "need 'ssl': True as well"),
    ],
)
def test_sentinel_entries_are_checked_when_the_layer_is_built(
    host: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=re.escape(says)) as refused:
        RedisChannelLayer(hosts=[host])
    assert SECRET not in str(refused.value)


def test_cluster_and_sentinel_do_not_go_together() -> None:
    with pytest.raises(TypeError, match="cluster=True and a Sentinel entry"):
        RedisChannelLayer(hosts=[entry(password=SECRET)], cluster=True)
    with pytest.raises(TypeError) as refused:  # the message of a wrong dict shows no secret
        RedisChannelLayer(hosts=[{"host": "h", "password": SECRET}], cluster=True)
    assert SECRET not in str(refused.value)


def test_the_address_shown_names_sentinels_and_master_without_secrets() -> None:
    host = entry(
        password=SECRET, username="app", sentinel_kwargs={"password": SECRET + "-sentinel"}
    )
    _, shown = connection_source(host)
    assert shown == "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"
    _, shown = connection_source(entry(sentinels=[("::1", 26379)], ssl=True))
    assert shown == "rediss+sentinel://[::1]:26379/mymaster"
    assert host_secrets(host) == {SECRET, SECRET + "-sentinel"}
    layer = RedisChannelLayer(hosts=[host])
    transport = layer.make_transport(events=None)  # type: ignore[arg-type]
    assert SECRET not in transport.url and SECRET not in repr(transport)


@pytest.mark.asyncio
async def test_no_sentinel_reachable_fails_at_once_naming_master_and_sentinels() -> None:
    sentinels = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    layer = RedisChannelLayer(hosts=[{"sentinels": sentinels, "master_name": "orders"}])
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as refused:
        await layer.new_channel()
    assert time.monotonic() - started < PROMPT
    error = refused.value
    assert error.cause == "unreachable"
    assert "no sentinel names a master for 'orders'" in str(error)
    for name, port in sentinels:
        assert f"{name}:{port}: unreachable" in str(error)
    assert (
        error.url
        == f"redis+sentinel://127.0.0.1:{sentinels[0][1]},127.0.0.1:{sentinels[1][1]}/orders"
    )
    await layer.close()


@pytest.mark.asyncio
async def test_a_master_name_no_sentinel_knows_is_named(redis_sentinel: RedisSentinelGroup) -> None:
    layer = RedisChannelLayer(hosts=[redis_sentinel.hosts_entry(master_name="nosuch")])
    with pytest.raises(BrokerUnavailable) as refused:
        await layer.new_channel()
    assert refused.value.cause == "unreachable"
    assert "no sentinel names a master for 'nosuch'" in str(refused.value)
    assert "No such master with that name" in str(refused.value)
    await layer.close()


@pytest.mark.asyncio
async def test_a_sentinel_entry_shards_with_a_plain_server(
    redis_sentinel: RedisSentinelGroup, redis_server: BrokerProcess
) -> None:
    """Several entries are shards, whatever their kind: both servers carry traffic."""
    hosts: list[str | dict[str, Any]] = [redis_sentinel.hosts_entry(), redis_server.url]
    prefix = unique_prefix()
    one = RedisChannelLayer(hosts=hosts, prefix=prefix)
    two = RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        member = await two.new_channel()
        groups = [f"room-{index}" for index in range(8)]
        for group in groups:
            await two.group_add(group, member)
        for group in groups:
            await one.group_send(group, {"type": "g", "group": group})
        arrived = {(await receive_within(two, member))["group"] for _ in groups}
        assert arrived == set(groups)
        await one.send(member, {"type": "direct"})
        assert (await receive_within(two, member))["type"] == "direct"
        for name in ("work-a", "work-b", "work-c", "work-d"):
            await one.send(name, {"type": "job"})
            assert (await receive_within(two, name))["type"] == "job"
        transport = next(iter(one._routers.values())).transport
        assert isinstance(transport, ShardedRedisTransport)
        used = {transport.shard(f"{prefix}:g:{group}").url for group in groups}
        assert used == {shard.url for shard in transport.shards}
    finally:
        await one.close()
        await two.close()


# -- loss is counted ------------------------------------------------------------------------------


async def until_counted(layer: RedisChannelLayer, reason: str, at_least: int) -> None:
    for _ in range(200):
        if layer.counters[reason] >= at_least:
            return
        await asyncio.sleep(PROMPT / 100)


@pytest.mark.asyncio
async def test_publishes_the_broker_never_confirmed_are_counted(
    fresh_redis_server: RedisServer,
) -> None:
    """PUBLISHes written to a server that dies before answering them: ``unconfirmed``."""
    sender = RedisChannelLayer(hosts=[fresh_redis_server.url], prefix="unconfirmed")
    receiver = RedisChannelLayer(hosts=[fresh_redis_server.url], prefix="unconfirmed")
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "before"})
    assert (await receive_within(receiver, channel))["type"] == "before"
    # Redis holds PUBLISHes unanswered while writes are paused; then it dies.
    fresh_redis_server.admin_command("CLIENT", "PAUSE", 30_000, "WRITE")
    for n in range(5):
        await sender.send(channel, {"type": "in flight", "n": n})
        await asyncio.sleep(0)  # a new event-loop turn: one PUBLISH each (a turn's share one)
    fresh_redis_server.kill()
    await until_counted(sender, "unconfirmed", 5)
    assert sender.counters["unconfirmed"] == 5
    assert sender.counters["broker_down"] == 0
    await sender.close()
    await receiver.close()


@pytest.mark.asyncio
async def test_a_publish_that_no_subscriber_received_is_counted(
    fresh_redis_server: RedisServer,
) -> None:
    """A send to a channel of a process that is gone: ``no_subscriber``; a group send that
    nobody else receives is normal (every member may be local), and not counted."""
    server = fresh_redis_server
    sender = RedisChannelLayer(hosts=[server.url], prefix="gone")
    gone = RedisChannelLayer(hosts=[server.url], prefix="gone")
    channel = await gone.new_channel()
    assert server.admin_command("PUBSUB", "NUMPAT") == 1
    await gone.close()
    for _ in range(100):  # Redis has seen the process go (its pattern is gone)
        if server.admin_command("PUBSUB", "NUMPAT") == 0:
            break
        await asyncio.sleep(0.01)
    await sender.send(channel, {"type": "lost"})
    await sender.group_send("empty", {"type": "nobody"})
    await until_counted(sender, "no_subscriber", 1)
    await sender.send(channel, {"type": "flush"})  # a round trip: the group send's answer is in
    await until_counted(sender, "no_subscriber", 2)
    assert sender.counters["no_subscriber"] == 2
    await sender.close()


@pytest.mark.asyncio
async def test_a_demoted_master_is_left_and_a_replica_never_used(
    fresh_redis_sentinel: RedisSentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    """The master turns replica under the layer (REPLICAOF, no failover): its READONLY answer
    ends the connection, and ROLE refuses every reconnect while the sentinels still name it."""
    group = fresh_redis_sentinel
    layer = RedisChannelLayer(hosts=[group.hosts_entry()], prefix="demoted")
    other = RedisServer()
    other.start()
    try:
        await layer.send("work", {"type": "before"})
        assert (await receive_within(layer, "work"))["type"] == "before"
        with caplog.at_level(logging.DEBUG, logger="channels_neffos"):
            group.master.admin_command("REPLICAOF", "127.0.0.1", other.port)
            with pytest.raises(BrokerUnavailable, match="demoted to a replica"):
                await layer.send("work", {"type": "refused"})
            for _ in range(300):  # a reconnect attempt reaches it, and ROLE turns it away
                if "is a slave (a failover is under way)" in caplog.text:
                    break
                await asyncio.sleep(0.01)
            assert "is a slave (a failover is under way)" in caplog.text
            with pytest.raises(BrokerUnavailable):
                await layer.send("work", {"type": "still a replica"})
            group.master.admin_command("REPLICAOF", "NO", "ONE")
            for _ in range(300):
                try:
                    await layer.send("work", {"type": "after"})
                    break
                except BrokerUnavailable:
                    await asyncio.sleep(0.01)
        assert (await receive_within(layer, "work"))["type"] == "after"
        assert layer.counters["connection_lost"] >= 1
        assert layer.counters["connection_restored"] >= 1
    finally:
        await layer.close()
        other.stop()


# -- failovers under load ---------------------------------------------------------------------

#: Every way a send may fail to the sender's face during a failover.
RAISED = (BrokerUnavailable, AskTimeout, NoResponders)
#: Seconds between two sends of one stream: ~300 messages/s each, one message per broker frame
#: (sends in one event-loop turn would share a frame, which the counters count once).
PACE = 0.0025
#: The bound on a crash: Sentinel's detection (down-after 1 s, plus up to one 1 s ping period),
#: an election (a split vote is retried after 2 x failover-timeout, 4 s), the promoted replica
#: seen through INFO (1 s), and reconnecting — all of which the measured runs beat by far.
RESUME_AFTER_A_CRASH = 10.0
#: The bound after a graceful failover's announcement (+switch-master): no detection, no
#: backoff — the layer moves as soon as a sentinel names the new master.
RESUME_AFTER_AN_ANNOUNCEMENT = 1.0
#: An ask whose question or answer was lost in the move holds its asker this long (AskTimeout).
ASK_TIMEOUT = 1.0
#: Group messages lost without a count: published on the new master by a process that got there
#: before the receiving process re-subscribed. Everyone moves on the same announcement, so this
#: is a few milliseconds of traffic (measured: 0-2 messages), not a backoff step (~1 s).
UNCOUNTED_GROUP_LOSS = 40


@dataclass
class Stream:
    """One numbered stream: when each number was sent or raised, and when it arrived."""

    kind: str
    sent: dict[int, float] = field(default_factory=dict)
    raised: dict[int, str] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)
    duplicates: list[int] = field(default_factory=list)

    def got(self, n: int, now: float) -> None:
        if n in self.received:
            self.duplicates.append(n)
        else:
            self.received[n] = now

    def first_sent_after(self, moment: float) -> int | None:
        """The first number sent after ``moment`` that arrived."""
        arrived = [n for n, sent in self.sent.items() if sent > moment and n in self.received]
        return min(arrived) if arrived else None

    def arrived_sent_after(self, moment: float) -> int:
        return sum(1 for n, sent in self.sent.items() if sent > moment and n in self.received)

    @property
    def missing(self) -> list[int]:
        return sorted(n for n in self.sent if n not in self.received)

    def longest_gap(self, since: float) -> float:
        times = sorted(t for t in self.received.values() if t >= since - 0.5)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Load:
    """Four streams, each from a sender layer of its own, to one receiver layer."""

    KINDS = ("process", "group", "worker", "ask")

    def __init__(self, hosts: list[Any]) -> None:
        prefix = unique_prefix()

        def layer() -> RedisChannelLayer:
            return RedisChannelLayer(hosts=hosts, prefix=prefix, capacity=100_000)

        self.receiver = layer()
        self.senders = {kind: layer() for kind in self.KINDS}
        self.streams = {kind: Stream(kind) for kind in self.KINDS}
        self.changed = asyncio.Event()
        self.stopping = asyncio.Event()
        self.pumps: list[asyncio.Task[None]] = []
        self.readers: list[asyncio.Task[None]] = []

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        rx = self.receiver
        channel, member, responder = [await rx.new_channel() for _ in range(3)]
        await rx.group_add("room", member)
        senders, streams = self.senders, self.streams

        async def receive(kind: str, name: str) -> None:
            while True:
                message = await rx.receive(name)
                streams[kind].got(message["n"], self.clock())
                self.changed.set()

        async def answer() -> None:
            while True:
                question = await rx.receive(responder)
                await rx.reply(question, {"n": question["n"]})

        async def ask(n: int) -> None:
            answer = await senders["ask"].ask(responder, {"type": "q", "n": n}, timeout=ASK_TIMEOUT)
            assert answer == {"n": n}
            streams["ask"].got(n, self.clock())
            self.changed.set()

        sends: dict[str, Callable[[int], Awaitable[None]]] = {
            "process": lambda n: senders["process"].send(channel, {"type": "m", "n": n}),
            "group": lambda n: senders["group"].group_send("room", {"type": "m", "n": n}),
            "worker": lambda n: senders["worker"].send("work", {"type": "m", "n": n}),
            "ask": ask,
        }
        for kind, name in (("process", channel), ("group", member), ("worker", "work")):
            self.readers.append(asyncio.ensure_future(receive(kind, name)))
        self.readers.append(asyncio.ensure_future(answer()))
        self.started_at = self.clock()
        for kind in self.KINDS:
            self.pumps.append(asyncio.ensure_future(self._pump(streams[kind], sends[kind])))

    async def _pump(self, stream: Stream, send: Callable[[int], Awaitable[None]]) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            sent_at = self.clock()
            try:
                await send(n)
            except RAISED as exc:
                stream.raised[n] = type(exc).__name__
            else:
                stream.sent[n] = sent_at
            await asyncio.sleep(PACE)

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait, message by message, until ``condition()``."""
        deadline = self.clock() + timeout
        while not condition():
            self.changed.clear()
            remaining = deadline - self.clock()
            if remaining <= 0:
                state = {
                    k: (len(s.sent), len(s.raised), len(s.received))
                    for k, s in self.streams.items()
                }
                raise AssertionError(
                    f"not within {timeout}s: {what}; (sent, raised, received) {state}"
                )
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def stop_sending(self) -> None:
        """Let every sender finish its current send (an ask may wait for its timeout)."""
        self.stopping.set()
        await asyncio.wait_for(asyncio.gather(*self.pumps), 10)  # a pump's error surfaces here

    async def close(self) -> None:
        self.stopping.set()
        for task in [*self.pumps, *self.readers]:
            task.cancel()
        await asyncio.gather(*self.pumps, *self.readers, return_exceptions=True)
        for layer in self.layers:
            await layer.close()

    @property
    def layers(self) -> list[RedisChannelLayer]:
        return [self.receiver, *self.senders.values()]


def following(layer: RedisChannelLayer) -> bool:
    """Whether the layer's transport (in this event loop) listens for new masters."""
    transports = [process.transport for process in layer._routers.values()]
    return bool(transports) and all(getattr(t, "_following", False) for t in transports)


class Announcement:
    """When a sentinel first announces a new master (``+switch-master``), in loop time."""

    def __init__(self, group: RedisSentinelGroup) -> None:
        self.clients = [
            redis_asyncio.Redis(host=host, port=port, password=group.sentinel_password)
            for host, port in group.sentinels
        ]
        self.pubsubs = [client.pubsub() for client in self.clients]

    async def listen(self) -> None:
        """Subscribe on every sentinel; return once each has confirmed it."""
        for pubsub in self.pubsubs:
            await pubsub.subscribe("+switch-master")
            confirmed = await pubsub.get_message(timeout=5)
            assert confirmed is not None and confirmed["type"] == "subscribe", confirmed

    async def heard(self) -> float:
        async def one(pubsub: Any) -> None:
            while await pubsub.get_message(ignore_subscribe_messages=True, timeout=30) is None:
                pass

        listening = [asyncio.ensure_future(one(pubsub)) for pubsub in self.pubsubs]
        try:
            await asyncio.wait(listening, return_when=asyncio.FIRST_COMPLETED)
            return asyncio.get_running_loop().time()
        finally:
            for task in listening:
                task.cancel()
            await asyncio.gather(*listening, return_exceptions=True)

    async def close(self) -> None:
        for pubsub in self.pubsubs:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in self.clients:
            await client.aclose()


@dataclass
class Failover:
    """What one failover under load did: times from the trigger, and the streams."""

    how: str
    announced: float  # +switch-master
    resumed: dict[str, float]  # first arrival of a message sent after the trigger/announcement
    gaps: dict[str, float]  # longest time without an arrival
    load: Load

    def report(self) -> str:
        lines = [
            f"{self.how}: announced after {self.announced:.3f}s; resumed after "
            + ", ".join(f"{k} {v:.3f}s" for k, v in self.resumed.items())
            + "; longest gaps "
            + ", ".join(f"{k} {v:.3f}s" for k, v in self.gaps.items())
        ]
        for kind, stream in self.load.streams.items():
            counted = {r: n for r, n in self.load.senders[kind].counters.items() if r in REASONS}
            raised = dict(Counter(stream.raised.values()))
            lines.append(
                f"  {kind}: sent {len(stream.sent)}, raised {raised}, missing "
                f"{len(stream.missing)}, duplicates {len(stream.duplicates)}, counted {counted}"
            )
        return "\n".join(lines)


async def fail_over(group: RedisSentinelGroup, how: str) -> Failover:
    """Run the load, fail the master over (``"crash"`` or ``"graceful"``) mid-stream, wait until
    every stream flows through the new master, then drain."""
    load = Load([group.hosts_entry()])
    announcement = Announcement(group)
    heard: asyncio.Future[float] | None = None
    await load.start()
    try:
        # Traffic flows, and every layer listens for +switch-master (from its second second).
        await load.until(
            lambda: (
                all(len(s.received) >= 50 for s in load.streams.values())
                and all(following(layer) for layer in load.layers)
            ),
            15,
            "warm-up",
        )
        await announcement.listen()
        heard = asyncio.ensure_future(announcement.heard())
        triggered_at = load.clock()
        if how == "crash":
            group.kill_master()
        else:
            group.failover()
        announced_at = await asyncio.wait_for(heard, 20)
        # After a crash nothing arrives until the new master; a graceful failover keeps the old
        # master serving until the announcement.
        since = triggered_at if how == "crash" else announced_at
        await load.until(
            lambda: all(s.first_sent_after(since) is not None for s in load.streams.values()),
            30,
            "every stream through the new master",
        )
        resumed = {}
        for kind, stream in load.streams.items():
            first = stream.first_sent_after(since)
            assert first is not None
            resumed[kind] = stream.received[first] - triggered_at
        recovered_at = triggered_at + max(resumed.values())
        await load.until(
            lambda: all(s.arrived_sent_after(recovered_at) >= 100 for s in load.streams.values()),
            20,
            "traffic after the failover",
        )
        await load.stop_sending()
        await load.until(
            lambda: all(
                n in s.received
                for s in load.streams.values()
                for n, t in s.sent.items()
                if t > recovered_at
            ),
            10,
            "everything sent after the failover arrived",
        )
    finally:
        if heard is not None and not heard.done():
            heard.cancel()
            await asyncio.gather(heard, return_exceptions=True)
        await announcement.close()
        await load.close()
    result = Failover(
        how,
        announced_at - triggered_at,
        resumed,
        {k: s.longest_gap(triggered_at) for k, s in load.streams.items()},
        load,
    )
    print(result.report())
    check_accounting(result, recovered_at)
    return result


def check_accounting(result: Failover, recovered_at: float) -> None:
    """Every message that did not arrive was counted or raised, but for the named exceptions;
    nothing was lost once every stream flowed again."""
    load = result.load
    for kind, stream in load.streams.items():
        late = [n for n in stream.missing if stream.sent[n] > recovered_at]
        assert late == [], f"{kind}: lost after the failover: {late}"
    counted = {kind: load.senders[kind].counters for kind in Load.KINDS}

    process = load.streams["process"]
    down = counted["process"]["broker_down"] + counted["process"]["no_subscriber"]
    maybe = counted["process"]["unconfirmed"]
    # Exactly what was not sent (broker down) or reached nobody (no_subscriber) is lost, plus
    # some of the unconfirmed; plus, possibly, one PUBLISH Redis answered and died before
    # writing to the subscriber: nothing can count that one.
    assert down <= len(process.missing) <= down + maybe + 1, result.report()

    group = load.streams["group"]
    down = counted["group"]["broker_down"]
    assert down <= len(group.missing), result.report()
    uncounted = len(group.missing) - down - counted["group"]["unconfirmed"]
    assert uncounted <= UNCOUNTED_GROUP_LOSS, result.report()

    # A worker-channel push is confirmed or raised; replication is asynchronous, so one push
    # the master confirmed and died (or was demoted) before its replica had may be lost, and
    # one pop it answered before the replica saw it may come back.
    worker = load.streams["worker"]
    assert len(worker.missing) <= 1 and len(worker.duplicates) <= 1, result.report()

    asks = load.streams["ask"]
    assert set(asks.sent) == set(asks.received) and not asks.duplicates, result.report()
    assert set(asks.raised.values()) <= {"BrokerUnavailable", "AskTimeout", "NoResponders"}

    received_drops = {r: load.receiver.counters[r] for r in REASONS if load.receiver.counters[r]}
    # The receiver only publishes ask replies: those may be lost the same ways (and the ask
    # raised). Nothing it received was dropped.
    assert set(received_drops) <= {"broker_down", "unconfirmed", "no_subscriber"}, received_drops


@pytest.mark.asyncio
async def test_a_crashed_master_is_replaced_under_load(
    fresh_redis_sentinel: RedisSentinelGroup,
) -> None:
    result = await fail_over(fresh_redis_sentinel, "crash")
    assert max(result.resumed.values()) <= RESUME_AFTER_A_CRASH, result.report()


@pytest.mark.asyncio
async def test_a_graceful_failover_under_load(fresh_redis_sentinel: RedisSentinelGroup) -> None:
    """The old master lives on, a replica now: the layer moves at the announcement, not when
    Sentinel closes the old master's connections (~10 s later)."""
    result = await fail_over(fresh_redis_sentinel, "graceful")
    for kind, resumed in result.resumed.items():
        # An ask under way when the connections moved may have lost its question or answer.
        bound = RESUME_AFTER_AN_ANNOUNCEMENT + (ASK_TIMEOUT if kind == "ask" else 0)
        assert resumed - result.announced <= bound, result.report()
        assert result.gaps[kind] <= bound, result.report()
