"""``manage.py neffos`` (status, ping, send, group-send) of the test project, as a subprocess,
against live layer processes of this test on real brokers; and ``layer.stats()``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer
from channels_neffos.testing.conformance import unique_prefix

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["nats", "redis"])
def broker(request: pytest.FixtureRequest) -> Any:
    with NatsServer() if request.param == "nats" else RedisServer() as server:
        yield server


def make_layer(broker: BrokerProcess, prefix: str) -> Any:
    if isinstance(broker, NatsServer):
        return NatsChannelLayer(servers=[broker.url], prefix=prefix)
    return RedisChannelLayer(hosts=[broker.url], prefix=prefix)


async def manage(broker: BrokerProcess, prefix: str, *args: str) -> tuple[int, str, str]:
    """Run testproject's ``manage.py neffos ARGS`` without blocking this loop (whose layers
    must answer it)."""
    kind = "nats" if isinstance(broker, NatsServer) else "redis"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "testproject"), str(REPO)]),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "CHANNEL_LAYER": kind,
        f"{kind.upper()}_URL": broker.url,
        "CHANNEL_PREFIX": prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "testproject/manage.py",
        "neffos",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
async def test_status_lists_every_live_instance_with_its_groups(broker: BrokerProcess) -> None:
    prefix = unique_prefix()
    a, b = make_layer(broker, prefix), make_layer(broker, prefix)
    try:
        channels_a = [await a.new_channel() for _ in range(3)]
        for channel in channels_a:
            await a.group_add("room", channel)
        await a.group_add("lobby", channels_a[0])
        await b.group_add("room", await b.new_channel())
        pids = {a.stats().processes[0].pid, b.stats().processes[0].pid}

        code, out, err = await manage(broker, prefix, "status", "--json")
        assert code == 0, err
        [entry] = json.loads(out)["default"]
        assert entry["reachable"] and entry["round_trip_ms"] > 0
        assert entry["prefix"] == prefix and entry["broker"] == broker.url
        listed = {instance["pid"]: instance for instance in entry["instances"]}
        assert set(listed) == pids  # the command's own process is not an instance
        mine = listed[a.stats().processes[0].pid]
        assert mine["largest_groups"] == {"room": 3, "lobby": 1}
        assert mine["groups"] == 2 and mine["members"] == 4 and mine["connected"]
        assert mine["os_pid"] == os.getpid() and mine["uptime"] > 0
        assert "connection_lost" in mine["counters"] or mine["counters"] == {}

        code, out, err = await manage(broker, prefix, "status")
        assert code == 0, err
        assert "broker reachable, round trip" in out and "instances: 2 live" in out
        assert all(pid in out for pid in pids) and "room (3)" in out
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_ping_and_sends(broker: BrokerProcess) -> None:
    prefix = unique_prefix()
    layer = make_layer(broker, prefix)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        code, out, err = await manage(broker, prefix, "ping")
        assert code == 0 and "round trip" in out, err

        code, out, err = await manage(broker, prefix, "send", channel, '{"type": "x", "n": 1}')
        assert code == 0, err
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "x", "n": 1}
        code, out, err = await manage(broker, prefix, "group-send", "room", '{"type": "y"}')
        assert code == 0, err
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "y"}

        code, out, err = await manage(broker, prefix, "send", channel, '{"n": 1}')
        assert code == 1 and 'with a "type"' in err
        code, out, err = await manage(broker, prefix, "send", channel, "not json")
        assert code == 1 and "not JSON" in err
        code, out, err = await manage(broker, prefix, "status", "--layer", "nope")
        assert code == 1 and "no alias 'nope'" in err

        broker.kill()
        started = asyncio.get_running_loop().time()
        code, out, err = await manage(broker, prefix, "ping", "--timeout", "2", "--json")
        assert code == 1, out
        assert "error" in json.loads(out)["default"][0]
        assert asyncio.get_running_loop().time() - started < 20
        code, out, err = await manage(broker, prefix, "status")
        assert code == 1 and "UNREACHABLE" in out
    finally:
        await layer.close()


@pytest.mark.asyncio
async def test_stats_is_a_local_snapshot(broker: BrokerProcess) -> None:
    layer = make_layer(broker, unique_prefix())
    stats = layer.stats()  # before any process: no broker needed
    assert stats.processes == [] and stats.broker == broker.url
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "waiting"})
    [process] = layer.stats().processes
    assert (process.channels, process.queued, process.groups, process.members) == (1, 1, 1, 1)
    assert process.connected and process.down_for is None
    assert layer.stats().to_dict()["processes"][0]["largest_groups"] == {"g": 1}
    await layer.close()
