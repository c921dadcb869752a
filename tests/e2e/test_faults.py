"""Faults under real neffos.js clients, on each broker: two daphne instances of testproject.

The Node side, testproject/e2e/faults.mjs, asks for each fault ("STEP ...") and checks what its
clients see: with the broker SIGKILLed each instance keeps serving its own rooms and no client
is told; once the broker is back, cross-instance broadcasts resume within 2 s; with instance A
SIGKILLed, B's clients are unaffected and the clients behind the load balancer reconnect to B,
rejoin their room and receive again. Here we do the killing, and check that both instances
reported the outage through the Django signals (testproject's chat app logs them).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer

from .conftest import Instance, run_node_steps, running_instances


@pytest.fixture(params=["nats", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A private broker per test: the test kills it."""
    with NatsServer() if request.param == "nats" else RedisServer() as server:
        yield server


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_clients_through_broker_loss_and_a_killed_instance(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    kind = "nats" if isinstance(broker, NatsServer) else "redis"
    urls = {"NATS_URL" if kind == "nats" else "REDIS_URL": broker.url}
    with running_instances(kind, "daphne", urls, tmp_path) as (a, b):
        results = run_node_steps(
            "faults.mjs", a.url, b.url, on_step=lambda step: do_step(step, broker, a, b)
        )
        print(json.dumps({name: r["detail"] for name, r in results.items()}, indent=1)[:3000])
        assert len(results) >= 12
        for instance in (a, b):
            log = instance.log()
            assert f"broker connection lost: {broker.url}" in log, log[-3000:]
            assert f"broker connection restored: {broker.url}" in log, log[-3000:]


def do_step(step: str, broker: BrokerProcess, a: Instance, b: Instance) -> None:
    if step == "kill-broker":
        broker.kill()
        # Both instances noticed (their layers' signal receivers logged it).
        wait_for(
            lambda: all("broker connection lost" in i.log() for i in (a, b)),
            10,
            "both instances to report the lost broker",
        )
    elif step == "restart-broker":
        broker.start()
    elif step == "kill-a":
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
    else:
        raise AssertionError(f"faults.mjs asked for an unknown step {step!r}")
