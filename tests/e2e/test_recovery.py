"""Recovery and drain under real neffos.js clients with the client helper (recovery.js).

testproject/e2e/recovery.mjs runs the clients — 100 behind a round-robin balancer in front of
two instances (no stickiness), in a history room — and asks for each step; here we send the
room's broadcasts from outside the instances (as a Celery task would), kill, drain and restart
instances and brokers, and check the instances' logs:

(a) ``kill``: instance A is SIGKILLed mid-stream; its clients reconnect to B and recover —
    every client ends with every broadcast exactly once, in offset order;
(b) ``rolling``: A is drained (SIGTERM), restarted, then B: nothing lost, nothing twice, and no
    ERROR or traceback in either log;
(c) ``broker``: the broker is restarted without its data: every client is told
    ``recovered: false`` and runs its reload path;
(d) ``away``: a client away longer than its room's history holds gets ``recovered: false`` and
    nothing replayed.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The sender uses the instances' rules (conftest puts testproject/ on sys.path).
from broadcaster import Broadcaster
from testproject.settings import CHAT_HISTORY as HISTORY

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer

from .conftest import Instance, run_node_steps, running_instances


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A private broker (the broker mode restarts it without its data)."""
    with NatsServer() if request.param == "nats" else RedisServer() as started:
        yield started


def layer_for(broker: BrokerProcess, prefix: str) -> Any:
    if isinstance(broker, NatsServer):
        return NatsChannelLayer(servers=[broker.url], prefix=prefix, history=HISTORY)
    return RedisChannelLayer(hosts=[broker.url], prefix=prefix, history=HISTORY)


def assert_clean(instance: Instance) -> None:
    log = instance.log()
    for bad in ("ERROR", "Traceback", "Task was destroyed"):
        assert bad not in log, f"{instance.name}'s log has {bad!r}:\n{log[-4000:]}"


def scenario(mode: str, broker: BrokerProcess, tmp_path: Path, server_name: str, clients: int):
    kind = "nats" if isinstance(broker, NatsServer) else "redis"
    urls = {"NATS_URL" if kind == "nats" else "REDIS_URL": broker.url}
    with running_instances(kind, server_name, urls, tmp_path) as (a, b):
        room = "small-away" if mode == "away" else "r"
        sender = Broadcaster(layer_for(broker, a.env["CHANNEL_PREFIX"]), [room], rate=25)

        def do_step(step: str) -> str | None:
            if step == "send-start":
                sender.start()
            elif step == "send-stop":
                return str(sender.stop()[room])
            elif step == "kill-a":
                a.process.send_signal(signal.SIGKILL)
                a.process.wait(timeout=10)
            elif step.startswith("drain-"):
                instance = a if step == "drain-a" else b
                if step == "drain-a":
                    instance.process.send_signal(signal.SIGTERM)
                else:  # the documented command: SIGTERM, then wait for the exit
                    run = instance.manage("neffos", "drain", "--pid", str(instance.pid))
                    assert run.returncode == 0, run.stderr
                    assert f"{instance.pid}: drained and exited" in run.stdout, run.stdout
                # uvicorn re-raises the signal once it has shut down (exit by SIGTERM); daphne 0
                exited = (0, -signal.SIGTERM) if instance.server == "uvicorn" else (0,)
                assert instance.process.wait(timeout=30) in exited, instance.log()[-3000:]
            elif step.startswith("start-"):
                (a if step == "start-a" else b).restart()
            elif step == "restart-broker":
                broker.kill()
                store = broker.workdir / "jetstream"  # Redis keeps nothing on disk here
                if store.exists():
                    shutil.rmtree(store)
                broker.start()
            else:
                raise AssertionError(f"recovery.mjs asked for an unknown step {step!r}")
            return None

        try:
            results = run_node_steps(
                "recovery.mjs", mode, a.url, b.url, str(clients), on_step=do_step
            )
        finally:
            sender.stop()
        print(json.dumps({name: r["detail"] for name, r in results.items()}, indent=1)[:3000])
        return a, b


def test_a_killed_instance_clients_recover_on_the_other(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    scenario("kill", broker, tmp_path, "daphne", 100)


@pytest.mark.parametrize(("broker_kind", "server_name"), [("redis", "daphne"), ("nats", "uvicorn")])
def test_a_rolling_deploy_loses_nothing_and_logs_no_error(
    broker_kind: str, server_name: str, tmp_path: Path
) -> None:
    """Each server and each broker once (the four pairs take a minute more, for no new path)."""
    with NatsServer() if broker_kind == "nats" else RedisServer() as broker:
        a, b = scenario("rolling", broker, tmp_path, server_name, 100)
    for instance in (a, b):
        assert_clean(instance)
        log = instance.log()
        assert "SIGTERM: draining" in log and "drained; stopping the server" in log, log[-3000:]


def test_a_broker_restarted_without_its_data_makes_clients_reload(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    scenario("broker", broker, tmp_path, "daphne", 20)


def test_a_client_away_longer_than_history_holds_is_not_recovered(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    scenario("away", broker, tmp_path, "daphne", 2)
