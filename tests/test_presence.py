"""Presence beyond the conformance suite: scale, broker restarts, lost hosts, and when it is off.

(The conformance suite checks exactness across instances and OS processes, closed and killed
processes and group expiry on every layer, restricted users and encryption included.)
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from channels_neffos import NatsChannelLayer, PresenceUnavailable, RedisChannelLayer
from channels_neffos._core.roster import ANSWER_TIMEOUT, PROCESS_TTL
from channels_neffos.testing.brokers import BrokerProcess, NatsServer
from channels_neffos.testing.conformance import LayerSpec, receive_within, unique_prefix
from channels_neffos.testing.conformance._helpers import run_child


def _layers(broker: str, server: BrokerProcess) -> Callable[..., Any]:
    prefix = unique_prefix()
    if broker == "redis":
        return lambda **options: RedisChannelLayer(hosts=[server.url], prefix=prefix, **options)
    return lambda **options: NatsChannelLayer(servers=[server.url], prefix=prefix, **options)


async def _children_with_members(
    layer: Any, spec: LayerSpec, group: str, processes: int, each: int
) -> tuple[list[Any], list[str]]:
    report = await layer.new_channel()
    children = [
        await run_child(spec, "members", group, str(each), report) for _ in range(processes)
    ]
    channels: list[str] = []
    for _ in children:
        ready = await receive_within(layer, report, timeout=60)
        channels += ready["channels"]
    return children, channels


async def _end(children: list[Any]) -> None:
    for child in children:
        if child.returncode is None:
            child.kill()
        await child.wait()


@pytest.mark.asyncio
@pytest.mark.parametrize("broker", ["redis", "nats"])
async def test_ten_thousand_members_over_four_os_processes_are_exact(
    broker: str, redis_spec: LayerSpec, nats_spec: LayerSpec
) -> None:
    spec = redis_spec if broker == "redis" else nats_spec
    observer = spec.build()
    group = "big-" + secrets.token_hex(4)
    children, channels = await _children_with_members(observer, spec, group, 4, 2_500)
    try:
        assert await observer.group_size(group) == 10_000
        assert await observer.group_members(group) == sorted(channels)
        started = time.perf_counter()
        for _ in range(10):
            assert await observer.group_size(group) == 10_000
        # Generous here (a shared CI box); benchmarks/presence.py measures the p95 target.
        assert (time.perf_counter() - started) / 10 < 0.5
    finally:
        await _end(children)
        await observer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("broker", ["redis", "nats"])
async def test_presence_is_right_again_after_a_broker_restart(
    broker: str, request: pytest.FixtureRequest
) -> None:
    server: BrokerProcess = request.getfixturevalue(f"fresh_{broker}_server")
    make = _layers(broker, server)
    member, observer = make(), make()
    group = "r-" + secrets.token_hex(4)
    channel = await member.new_channel()
    await member.group_add(group, channel)
    assert await observer.group_members(group) == [channel]
    restored = member.counters["connection_restored"]
    server.kill()  # Redis without persistence and NATS' memory bucket lose the registry
    server.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            if await observer.group_members(group) == [channel]:
                break
        except (ConnectionError, PresenceUnavailable):
            pass  # still reconnecting
        assert time.monotonic() < deadline, "presence did not recover after the restart"
        await asyncio.sleep(0.1)
    assert member.counters["connection_restored"] > restored
    for layer in (member, observer):
        await layer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("broker", ["redis", "nats"])
async def test_a_process_that_stops_answering_is_left_out_then_unlisted_within_the_bound(
    broker: str, redis_spec: LayerSpec, nats_spec: LayerSpec
) -> None:
    """A lost host: its connection looks open to the broker, but nothing answers (SIGSTOP)."""
    spec = redis_spec if broker == "redis" else nats_spec
    observer = spec.build()
    group = "lost-" + secrets.token_hex(4)
    (child,), _ = await _children_with_members(observer, spec, group, 1, 2)
    try:
        assert await observer.group_size(group) == 2
        child.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        assert await observer.group_size(group) == 0  # left out after ANSWER_TIMEOUT
        assert time.monotonic() - started < ANSWER_TIMEOUT + 1
        assert observer.counters["presence_timeout"] >= 1
        while True:  # each query waits ANSWER_TIMEOUT for it while it is listed
            before = observer.counters["presence_timeout"]
            assert await observer.group_size(group) == 0
            if observer.counters["presence_timeout"] == before:
                break  # not asked any more: its entry expired
            assert time.monotonic() - started <= 15, "still listed after the documented bound"
        assert time.monotonic() - started >= PROCESS_TTL - ANSWER_TIMEOUT - 1  # by expiry
        asked = time.monotonic()
        assert await observer.group_size(group) == 0
        assert time.monotonic() - asked < ANSWER_TIMEOUT / 2  # quick again
    finally:
        child.send_signal(signal.SIGCONT)
        await _end([child])
        await observer.close()


@pytest.mark.asyncio
async def test_nats_without_jetstream_groups_work_and_presence_says_why() -> None:
    with NatsServer(jetstream=False) as server:
        prefix = unique_prefix()
        one = NatsChannelLayer(servers=[server.url], prefix=prefix)
        two = NatsChannelLayer(servers=[server.url], prefix=prefix)
        channel = await one.new_channel()
        await one.group_add("g", channel)  # works, logs a warning once
        await two.group_send("g", {"type": "still delivered"})
        assert (await receive_within(one, channel))["type"] == "still delivered"
        started = time.monotonic()
        with pytest.raises(PresenceUnavailable, match="JetStream"):
            await two.group_members("g")
        assert time.monotonic() - started < 1
        for layer in (one, two):
            await layer.close()


@pytest.mark.asyncio
async def test_presence_false_costs_nothing_and_says_it_is_off(redis_spec: LayerSpec) -> None:
    layer = redis_spec.build(presence=False)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    process = next(iter(layer._routers.values()))
    assert await process.transport.registry().announced() == []  # never announced
    with pytest.raises(PresenceUnavailable, match="presence is off"):
        await layer.group_size("g")
    with pytest.raises(TypeError, match="presence must be True or False"):
        redis_spec.build(presence="yes")
    await layer.close()
