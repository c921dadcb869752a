"""Soak benchmark: 1,000 neffos.js clients on two testproject instances for 10 minutes, with a
broker restart in the middle. Not part of the test suite or CI.

    python -m benchmarks.soak                          # NATS, 1,000 clients, 10 minutes
    python -m benchmarks.soak --broker redis
    python -m benchmarks.soak --clients 100 --minutes 1 --out /tmp/soak.json   # a quick try

What runs: a private ``nats-server`` (JetStream on: the chat's ``who`` needs presence) or
``redis-server`` on a free port (:mod:`channels_neffos.testing.brokers`); two testproject
instances under daphne (``testproject/instances.py``; settings ``benchmarks.soak.settings``:
testproject's with timed, levelled log lines, ``DEBUG`` off); and ``--node-processes`` Node
processes running ``clients.mjs`` (next to this file), the real ``neffos.js`` client. Client
*i* connects to instance *i* mod 2, to the chat namespace, and is in ``ROOMS_PER_CLIENT`` rooms
of ``clients * ROOMS_PER_CLIENT / ROOM_SIZE`` (about ``ROOM_SIZE`` members each, on both
instances). Once every client is connected, each one, on its own jittered timers:

* broadcasts a ``chat`` message into one of its rooms every ``BROADCAST_EVERY`` seconds (the
  server relays it to the room's other members on both instances; the text is a unique id and
  the send time);
* leaves one of its rooms and joins another every ``CHURN_EVERY`` seconds;
* asks every ``ASK_EVERY`` seconds one of ``whoami`` (answered by its instance), ``who`` (the
  room's members on every instance: presence, through the broker) and ``poke`` (its instance
  asks another client, on either instance, "ping" and returns the answer).

At ``--outage-at`` seconds the broker is SIGKILLed and started again on the same port
``--outage-seconds`` later. Meanwhile the driver samples every process's RSS and CPU (psutil,
every ``sampler.SAMPLE_EVERY`` s). Afterwards :mod:`benchmarks.soak.judge` judges what the clients
logged — losses, latencies, asks, errors, recovery — and the servers' output; the JSON and a
plot go to ``--out`` (default ``docs/benchmarks/soak.json`` and ``.png`` for NATS,
``soak_redis.*`` for Redis). The run's raw material stays in ``benchmarks/results/soak-*/``:
every client's log, both servers' output, the broker's log, and ``run.json`` (the parameters
and what happened, unjudged), from which ``--judge <that directory>`` judges the run again.

Every child process (broker, instances, Node) is stopped in a ``finally``, also on Ctrl-C and
SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped]

from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer, free_port

from . import judge, report
from .node import NodeClients
from .sampler import Sampler

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "testproject"))
from instances import instance_environment, start_instance, wait_listening  # noqa: E402

#: Seconds between a client's broadcasts, churns (leave one room, join another) and asks: each
#: next one is drawn uniformly from the interval. Moderate on purpose: the soak measures
#: steadiness, not saturation (1,000 clients: ~67 broadcasts/s, ~33 churns/s, ~33 asks/s).
BROADCAST_EVERY = (10.0, 20.0)
CHURN_EVERY = (20.0, 40.0)
ASK_EVERY = (20.0, 40.0)
#: Rooms each client is in, and the rooms' mean size (rooms = clients * 3 / 30).
ROOMS_PER_CLIENT = 3
ROOM_SIZE = 30
#: A client's ask, join or leave that gets no answer within this is a failure.
ASK_TIMEOUT_MS = 10_000
#: After the last action: time for late deliveries and answers, before the clients close.
DRAIN_MS = 5_000


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop everything and clean up, as Ctrl-C does."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def _stop_process(process: subprocess.Popen[Any] | None, grace: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def _children() -> Iterator[list[subprocess.Popen[Any]]]:
    """A list to put child processes in; each is stopped on the way out, whatever happened."""
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            _stop_process(process)


def make_broker(kind: str) -> BrokerProcess:
    if kind == "nats":
        return NatsServer()  # JetStream on: presence ("who") needs it
    if kind == "redis":
        return RedisServer()
    raise ValueError(f"--broker must be nats or redis, not {kind!r}")


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Run the soak; return what happened (times, samples, paths of the logs), unjudged."""
    broker = make_broker(args.broker)
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    env = instance_environment(dict(os.environ))
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "benchmarks.soak.settings",
            "DJANGO_DEBUG": "0",
            "PYTHONUNBUFFERED": "1",  # log lines reach the file when they happen
            "CHANNEL_LAYER": args.broker,
            "CHANNEL_PREFIX": prefix,
            "NATS_URL" if args.broker == "nats" else "REDIS_URL": broker.url,
            # The rooms keep history (the clients recover through it), or not (--no-recovery).
            "CHAT_HISTORY": "on" if args.recovery else "off",
        }
    )
    ports = {"a": free_port(), "b": free_port()}
    started: dict[str, Any] = {"broker_url": broker.url, "ports": ports, "prefix": prefix}
    timeline: dict[str, float] = {"began": time.time()}
    sampler: Sampler | None = None
    blocks = _blocks(args.clients, args.node_processes)
    done: list[dict[str, Any]] = []
    broker.start()
    try:
        with _children() as children:
            instances: dict[str, subprocess.Popen[bytes]] = {}
            for name, port in ports.items():
                with open(run_dir / f"instance_{name}.log", "wb") as output:
                    instances[name] = start_instance(name.upper(), port, env, output)
                children.append(instances[name])
            for name, port in ports.items():
                wait_listening(port, instances[name])

            urls = [f"ws://127.0.0.1:{ports['a']}", f"ws://127.0.0.1:{ports['b']}"]
            rooms = max(1, round(args.clients * ROOMS_PER_CLIENT / ROOM_SIZE))
            node: list[NodeClients] = []
            for index, (first, count) in enumerate(blocks):
                config = {
                    "urls": urls,
                    "first": first,
                    "count": count,
                    "rooms": rooms,
                    "roomsPerClient": ROOMS_PER_CLIENT,
                    "seed": args.seed,
                    "broadcastEvery": BROADCAST_EVERY,
                    "churnEvery": CHURN_EVERY,
                    "askEvery": ASK_EVERY,
                    "askTimeoutMs": ASK_TIMEOUT_MS,
                    "joinTimeoutMs": ASK_TIMEOUT_MS,
                    "connectConcurrency": 10,
                    "connectMs": 300_000,
                    "drainMs": DRAIN_MS,
                    "log": str(run_dir / f"clients_{index}.jsonl"),
                    "recovery": args.recovery,
                }
                with open(run_dir / f"node_{index}.stderr", "wb") as stderr:
                    node.append(NodeClients(config, stderr))
                children.append(node[-1].process)
            started["rooms"] = rooms

            sampler = Sampler(
                instances={name: psutil.Process(p.pid) for name, p in instances.items()},
                broker=broker,
                node=[psutil.Process(n.process.pid) for n in node],
            )
            sampler.start()

            print(f"connecting {args.clients} clients ({rooms} rooms) ...", flush=True)
            deadline = time.monotonic() + 360
            ready = [n.wait_for("ready", deadline) for n in node]
            timeline["connected"] = time.time()
            print(f"connected in {max(r['connect_s'] for r in ready):.1f} s", flush=True)

            start = time.time() + 1.0
            stop = start + args.minutes * 60
            timeline["start"], timeline["stop"] = start, stop
            timeline["clients_closing"] = stop + DRAIN_MS / 1000  # clients.mjs closes them then
            for n in node:
                n.start(start * 1000, stop * 1000)

            outage_at = start + args.outage_at
            _sleep_until(outage_at, node)
            timeline["broker_killed"] = time.time()
            broker.kill()
            print(f"broker killed at {timeline['broker_killed'] - start:.1f} s", flush=True)
            _sleep_until(timeline["broker_killed"] + args.outage_seconds, node)
            timeline["broker_restarting"] = time.time()
            broker.start()
            timeline["broker_back"] = time.time()
            print(f"broker back at {timeline['broker_back'] - start:.1f} s", flush=True)

            _sleep_until(stop, node)
            print("stopping: draining late deliveries ...", flush=True)
            done_deadline = time.monotonic() + DRAIN_MS / 1000 + 60
            done = [n.wait_for("done", done_deadline) for n in node]
            for n in node:
                n.process.wait(30)
            timeline["clients_done"] = time.time()
            # Let the instances finish closing those connections: stopping them sooner would
            # cut the clean-up short and fill their logs with what that leaves behind.
            time.sleep(3)
            sampler.stop()
            sampler.sample()  # one last sample, before the instances stop
    finally:
        if sampler is not None:
            sampler.stop()
        broker.kill()
        _save_broker_log(broker, run_dir)
        shutil.rmtree(broker.workdir, ignore_errors=True)  # its JetStream store, its log
    return {
        **started,
        "timeline": timeline,
        "samples": sampler.samples if sampler else [],
        "node_done": done,
        "client_logs": [str(run_dir / f"clients_{i}.jsonl") for i in range(len(blocks))],
        "server_logs": {name: str(run_dir / f"instance_{name}.log") for name in ports},
    }


def _blocks(clients: int, processes: int) -> list[tuple[int, int]]:
    """Contiguous client ranges, one per Node process (each range spans both instances)."""
    processes = max(1, min(processes, clients))
    edges = [round(i * clients / processes) for i in range(processes + 1)]
    return [(edges[i], edges[i + 1] - edges[i]) for i in range(processes)]


def _sleep_until(when: float, node: list[NodeClients]) -> None:
    """Sleep until ``when`` (epoch s), printing the clients' progress and noticing if one died."""
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 1.0))
        for n in node:
            if n.process.poll() is not None:
                n.drain_progress()
                error = n.last.get("error", {}).get("error", "")
                raise RuntimeError(f"a node process exited early ({n.process.returncode}) {error}")
            n.drain_progress()


def _save_broker_log(broker: BrokerProcess, run_dir: Path) -> None:
    with suppress(OSError):
        (run_dir / "broker.log").write_bytes(broker.log_path.read_bytes())


def soak(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run it; keep the parameters and what happened in the run's directory, as run.json."""
    if args.outage_at is None:
        args.outage_at = args.minutes * 60 / 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = REPO / "benchmarks" / "results" / f"soak-{args.broker}-{stamp}"
    run_dir.mkdir(parents=True)
    print(f"soak: {args.clients} clients, {args.minutes:g} min, {args.broker}; logs in {run_dir}")
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, _raise_stopped)
    happened = run(args, run_dir)
    parameters = {
        "clients": args.clients,
        "minutes": args.minutes,
        "broker": args.broker,
        "outage_at_s": args.outage_at,
        "outage_seconds": args.outage_seconds,
        "node_processes": args.node_processes,
        "seed": args.seed,
        "rooms": happened["rooms"],
        "rooms_per_client": ROOMS_PER_CLIENT,
        "broadcast_every_s": BROADCAST_EVERY,
        "churn_every_s": CHURN_EVERY,
        "ask_every_s": ASK_EVERY,
        "ask_timeout_s": ASK_TIMEOUT_MS / 1000,
        "server": "daphne",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    kept = {"parameters": parameters, "happened": happened}
    (run_dir / "run.json").write_text(json.dumps(kept) + "\n")
    return parameters, happened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--broker", choices=("nats", "redis"), default="nats")
    parser.add_argument(
        "--outage-at", type=float, help="seconds after the start (default: the middle)"
    )
    parser.add_argument("--outage-seconds", type=float, default=5.0)
    parser.add_argument(
        "--out",
        type=Path,
        help="the JSON to write; the plot goes next to it as .png "
        "(default: docs/benchmarks/soak.json, soak_redis.json for Redis)",
    )
    parser.add_argument(
        "--no-recovery",
        dest="recovery",
        action="store_false",
        help="rooms without history and plain neffos.js clients (default: history rooms and "
        "the client helper, channels_neffos/static/channels_neffos/recovery.js)",
    )
    parser.add_argument("--node-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--judge",
        type=Path,
        metavar="RUN_DIR",
        help="run nothing: judge the run kept in RUN_DIR (benchmarks/results/soak-*) again",
    )
    args = parser.parse_args(argv)
    if args.judge is not None:
        kept = json.loads((args.judge / "run.json").read_text())
        parameters, happened = kept["parameters"], kept["happened"]
    else:
        parameters, happened = soak(args)
    if args.out is None:
        broker = parameters["broker"]
        name = "soak.json" if broker == "nats" else f"soak_{broker}.json"
        args.out = REPO / "docs" / "benchmarks" / name
    print("judging the logs ...", flush=True)
    results = judge.judge(parameters, happened)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    report.plot(results, args.out.with_suffix(".png"))
    print(report.summary(results))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
