"""The core without a broker: the router and its parts on the in-memory transport.

Fast, deterministic checks of what the conformance suite can only see from outside: the router's
lifecycle, the shared-attempt helper every part uses, single-flight work, the local fast paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from channels_neffos import BrokerUnavailable, LayerClosed
from channels_neffos._aio import SharedAttempt
from channels_neffos._core.mailboxes import Mailboxes
from channels_neffos._core.router import State
from channels_neffos.testing.conformance import receive_within, unique_prefix
from channels_neffos.testing.memory import MemoryBroker, MemoryChannelLayer, memory_broker


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = unique_prefix()
    yield name
    memory_broker(name).start()  # a test that stopped it leaves nothing behind


def make_layer(broker_name: str, **options: Any) -> MemoryChannelLayer:
    return MemoryChannelLayer(broker=broker_name, prefix="app", **options)


# -- SharedAttempt ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_callers_share_one_run_and_its_result() -> None:
    runs = 0
    gate = asyncio.Event()

    async def start() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return 42

    attempt = SharedAttempt(start)
    waiting = [asyncio.ensure_future(attempt()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [42] * 5
    assert await attempt() == 42 and attempt.succeeded
    assert runs == 1


@pytest.mark.asyncio
async def test_a_cancelled_caller_leaves_the_run_to_the_others() -> None:
    gate = asyncio.Event()

    async def start() -> str:
        await gate.wait()
        return "done"

    attempt = SharedAttempt(start)
    impatient, patient = asyncio.ensure_future(attempt()), asyncio.ensure_future(attempt())
    await asyncio.sleep(0)
    impatient.cancel()
    gate.set()
    assert await patient == "done"
    assert impatient.cancelled()


@pytest.mark.asyncio
async def test_a_failed_run_is_forgotten_and_the_next_call_tries_again() -> None:
    outcomes = [ConnectionError("down"), "up"]

    async def start() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    attempt = SharedAttempt(start)
    with pytest.raises(ConnectionError):
        await attempt()
    assert not attempt.succeeded and not attempt.running
    assert await attempt() == "up"


@pytest.mark.asyncio
async def test_a_cancelled_run_fails_its_waiters_with_cancelled_error_and_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two of the five hand-written copies this helper replaced called ``.exception()`` on a
    future that may have been cancelled: that raises CancelledError inside the error path."""
    blocked = True
    finished = 0

    async def start() -> None:
        nonlocal finished
        if blocked:
            await asyncio.sleep(3600)
        finished += 1

    attempt = SharedAttempt(start)
    waiter = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.01)
    await attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    blocked = False
    with caplog.at_level(logging.ERROR):
        await attempt()  # runs again, and nothing was logged or raised about the first run
    assert finished == 1 and attempt.succeeded and not caplog.records


@pytest.mark.asyncio
async def test_without_remember_a_finished_run_runs_again() -> None:
    runs = 0

    async def start() -> None:
        nonlocal runs
        runs += 1

    attempt: SharedAttempt[None] = SharedAttempt(start, remember=False)
    await attempt()
    await attempt()
    assert runs == 2 and not attempt.succeeded


# -- the router's lifecycle -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_lifecycle_states(broker_name: str) -> None:
    layer = make_layer(broker_name)
    await layer.new_channel()
    router = layer._routers[asyncio.get_running_loop()]
    assert router.state is State.RUNNING
    await layer.close()
    assert router.state is State.CLOSED
    with pytest.raises(LayerClosed, match="closed"):
        await router.start()  # misuse names the state
    await layer.new_channel()  # the layer itself makes a new router
    assert layer._routers[asyncio.get_running_loop()] is not router


@pytest.mark.asyncio
async def test_a_failed_start_fails_fast_then_a_new_router_connects(
    broker_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = memory_broker(broker_name)
    broker.stop()
    layer = make_layer(broker_name)
    with pytest.raises(BrokerUnavailable, match="stopped"):
        await layer.new_channel()
    assert asyncio.get_running_loop() not in layer._routers  # nothing half-started is kept
    broker.start()
    with pytest.raises(BrokerUnavailable):  # within RETRY_CONNECT_AFTER: the same answer
        await layer.new_channel()
    monkeypatch.setattr("channels_neffos.channel_layer.RETRY_CONNECT_AFTER", 0)
    assert "!" in await layer.new_channel()
    assert layer._routers[asyncio.get_running_loop()].state is State.RUNNING


@pytest.mark.asyncio
async def test_close_fails_waiting_receives_with_layer_closed(broker_name: str) -> None:
    layer = make_layer(broker_name)
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.close()
    with pytest.raises(LayerClosed, match=channel):
        await waiting


# -- single flight and fast paths -------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_first_memberships_announce_the_process_once(
    broker_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 concurrent first group_adds used to send 300 announcements at once (on a Redis
    Cluster, that many concurrent EVALs tripped redis-py); one is enough for all of them."""
    announced: list[str] = []
    original = MemoryBroker.announce

    def counting(self: MemoryBroker, key: str, pid: str, ttl: float) -> None:
        announced.append(pid)
        original(self, key, pid, ttl)

    async def like_a_network(self: Any, pid: str, ttl: float) -> None:
        await asyncio.sleep(0.01)  # a real broker answers later: the others get to ask too
        counting(self._broker, self._key, pid, ttl)

    monkeypatch.setattr(MemoryBroker, "announce", counting)
    monkeypatch.setattr("channels_neffos.testing.memory._MemoryRegistry.announce", like_a_network)
    layer = make_layer(broker_name)
    channels = [await layer.new_channel() for _ in range(300)]
    await asyncio.gather(*(layer.group_add("room", channel) for channel in channels))
    assert len(announced) == 1
    assert await layer.group_size("room") == 300


@pytest.mark.asyncio
async def test_a_delivery_to_a_waiting_receiver_makes_no_new_mailbox(
    broker_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty Mailbox is falsy (it has a length): ``get(c) or open(c)`` took the slow path
    exactly when a receiver was waiting on an empty mailbox."""
    receiver, sender = make_layer(broker_name), make_layer(broker_name)
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    opened: list[str] = []
    original = Mailboxes.open

    def counting(self: Mailboxes, name: str, capacity: int | None = None) -> Any:
        opened.append(name)
        return original(self, name, capacity)

    waiting = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0)  # waiting on its (empty) mailbox
    monkeypatch.setattr(Mailboxes, "open", counting)
    await sender.send(channel, {"type": "direct"})
    assert (await asyncio.wait_for(waiting, 5))["type"] == "direct"
    waiting = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0)
    await sender.group_send("room", {"type": "group"})
    assert (await asyncio.wait_for(waiting, 5))["type"] == "group"
    waiting = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0)
    await receiver.group_send("room", {"type": "local"})
    assert (await asyncio.wait_for(waiting, 5))["type"] == "local"
    assert opened == []


@pytest.mark.asyncio
async def test_sends_in_one_turn_to_one_process_leave_as_one_broker_message(
    broker_name: str,
) -> None:
    receiver, sender = make_layer(broker_name), make_layer(broker_name)
    channels = [await receiver.new_channel() for _ in range(10)]
    await sender.send(channels[0], {"type": "warm-up"})
    assert (await receive_within(receiver, channels[0]))["type"] == "warm-up"
    broker = memory_broker(broker_name)
    await asyncio.sleep(0)
    before = broker.published
    for n in range(100):
        await sender.send(channels[n % 10], {"type": "n", "n": n})
    got = [(await receive_within(receiver, channels[n % 10]))["n"] for n in range(100)]
    assert got == list(range(100))
    # The first send of the turn leaves alone; the other 99 share a frame.
    assert broker.published - before == 2


@pytest.mark.asyncio
async def test_a_send_to_a_gone_process_is_counted(broker_name: str) -> None:
    owner, sender = make_layer(broker_name), make_layer(broker_name)
    channel = await owner.new_channel()
    await owner.close()
    await sender.send(channel, {"type": "nobody"})
    await asyncio.sleep(0.01)
    assert sender.counters["no_subscriber"] == 1


@pytest.mark.asyncio
async def test_publishes_while_the_broker_is_down_are_counted_and_local_delivery_goes_on(
    broker_name: str,
) -> None:
    layer, other = make_layer(broker_name), make_layer(broker_name)
    mine, theirs = await layer.new_channel(), await other.new_channel()
    await layer.group_add("room", mine)
    memory_broker(broker_name).stop()
    await asyncio.sleep(0)
    await layer.send(theirs, {"type": "lost"})
    await layer.group_send("room", {"type": "kept"})  # its local member still gets it
    assert (await receive_within(layer, mine))["type"] == "kept"
    for _ in range(100):  # the group_send's frame leaves when the turn ends
        if layer.counters["broker_down"] == 2:
            break
        await asyncio.sleep(0)
    assert layer.counters["broker_down"] == 2
    assert layer.counters["connection_lost"] == 1
    assert layer.stats().processes[0].connected is False
