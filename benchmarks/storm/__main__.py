"""Reconnect storm: the instance of 1,000 clients is killed; they reconnect to the survivor and
recover what they missed. Not part of the test suite or CI.

    python -m benchmarks.storm                      # Redis, 1,000 clients
    python -m benchmarks.storm --broker nats --clients 300
    python -m benchmarks.storm --docs               # docs/benchmarks/storm.json

What runs: a private broker, testproject instances A and B (its chat rooms keep history) under
daphne and then uvicorn (``--server``), and two Node processes (``clients.mjs``): ``--clients``
*storm* clients on the channels_neffos client helper, all on A through a balancer that sends
each new connection to the first instance that accepts it, and ``--live`` plain neffos.js
clients on B — the survivor's own, 1,000 by default as in a balanced deployment — which
measure the latency of what they receive. The same storm runs again with plain neffos.js
clients (its ``reconnect`` option: they rejoin and recover nothing), the peer (``--no-peer``
skips it). The clients are in ``--rooms`` rooms; this process sends
numbered broadcasts into every room, ``--rate`` per room per second, stamped with their send
time, from a layer of its own (as a Celery task would).

After ``--baseline`` seconds A is SIGKILLed. Measured, in this one run:

* **time to recover**: from the kill until every storm client has received, in order and with
  nothing missing before it, a broadcast sent after the kill (the replay done, the client live);
* **the survivor's RSS** before the kill and at its highest afterwards;
* **the live clients' p99 latency** during the storm (kill → all recovered) over their p99 in
  the baseline just before it;
* at the end, that every storm client received every broadcast of its room from its first one
  on, exactly once and in order.

Targets (issue #21, this 2-core box): ≤ 15 s for 1,000 clients; p99 during ≤ 5 times p99 before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "testproject"))
from broadcaster import Broadcaster  # noqa: E402
from instances import instance_environment, start_instance, stop, wait_listening  # noqa: E402
from testproject.settings import CHAT_HISTORY  # noqa: E402

CLIENTS_JS = Path(__file__).with_name("clients.mjs")
TARGET_SECONDS = 15.0
TARGET_P99_RATIO = 5.0


class Node:
    """One ``node clients.mjs`` process; its JSON lines are read by a thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            ["node", str(CLIENTS_JS), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:  # not one of its JSON lines (a stray print): shown, not fatal
                print(f"node: {line.rstrip()[:300]}", file=sys.stderr)

    def wait_for(self, phase: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.process.poll() is not None
            if exited:
                self._reader.join(timeout=10)  # its last lines may still be being read
            for line in self.lines:
                if line["phase"] == "error":
                    raise RuntimeError(f"node failed: {line['error']}")
                if line["phase"] == phase:
                    return line
            if exited:
                raise RuntimeError(f"node exited ({self.process.returncode}) before {phase!r}")
            time.sleep(0.05)
        raise RuntimeError(f"no {phase!r} from node within {timeout} s")

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def latest(self, phase: str) -> dict[str, Any] | None:
        return next((line for line in reversed(self.lines) if line["phase"] == phase), None)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def make_broker(kind: str) -> BrokerProcess:
    return NatsServer() if kind == "nats" else RedisServer()


def layer_for(kind: str, url: str, prefix: str) -> Any:
    if kind == "nats":
        return NatsChannelLayer(servers=[url], prefix=prefix, history=CHAT_HISTORY)
    return RedisChannelLayer(hosts=[url], prefix=prefix, history=CHAT_HISTORY)


def storm(args: argparse.Namespace, plain: bool = False) -> dict[str, Any]:
    broker = make_broker(args.broker)
    broker.start()
    prefix = f"storm{uuid.uuid4().hex[:8]}"
    env = instance_environment(
        {
            **os.environ,
            "CHANNEL_LAYER": args.broker,
            "CHANNEL_PREFIX": prefix,
            "DJANGO_DEBUG": "0",
            **({"NEFFOS_ACCEPT_RATE": str(args.accept_rate)} if args.accept_rate else {}),
            "NATS_URL" if args.broker == "nats" else "REDIS_URL": broker.url,
        }
    )
    # The chat announces joins (a notice to the room's every member) but in quiet-* rooms.
    room_prefix = "quiet-" if args.quiet else "storm-"
    ports = {"A": free_port(), "B": free_port()}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    nodes: list[Node] = []
    sender: Broadcaster | None = None
    try:
        for name, port in ports.items():
            processes[name] = start_instance(
                name, port, env, subprocess.DEVNULL, server=args.server
            )
        for name, port in ports.items():
            wait_listening(port, processes[name])
        survivor = psutil.Process(processes["B"].pid)
        live = Node(
            {
                "role": "live",
                "url": f"ws://127.0.0.1:{ports['B']}",
                "count": args.live,
                "rooms": args.rooms,
                "roomPrefix": room_prefix,
            }
        )
        nodes.append(live)
        live.wait_for("ready", 120)
        began = time.monotonic()
        crowd = Node(
            {
                "role": "storm",
                "backends": [ports["A"], ports["B"]],
                "count": args.clients,
                "rooms": args.rooms,
                "roomPrefix": room_prefix,
                "minDelay": args.min_delay,
                "plain": plain,
            }
        )
        nodes.append(crowd)
        crowd.wait_for("ready", 300)
        connect_s = time.monotonic() - began
        print(
            f"{args.clients} clients on A (pid {processes['A'].pid}), {args.live} on B "
            f"(pid {processes['B'].pid}), connected in {connect_s:.1f} s",
            flush=True,
        )
        rooms = [f"{room_prefix}{index}" for index in range(args.rooms)]
        sender = Broadcaster(layer_for(args.broker, broker.url, prefix), rooms, args.rate)
        sender.start()
        time.sleep(args.baseline)
        rss_before = survivor.memory_info().rss
        watched = {
            "survivor": survivor,
            "storm clients (node)": psutil.Process(crowd.process.pid),
            "live clients (node)": psutil.Process(live.process.pid),
            "broker": psutil.Process(broker._process.pid),  # type: ignore[union-attr]
        }
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in watched.items()}
        storm_began = time.monotonic()
        killed_at = time.time() * 1000
        processes["A"].send_signal(signal.SIGKILL)
        processes["A"].wait()
        crowd.tell(f"killed {killed_at:.3f}")
        print("A killed; waiting for every client to recover ...", flush=True)
        rss_peak = rss_before
        deadline = time.monotonic() + args.timeout
        recovered_at: float | None = None
        while time.monotonic() < deadline:
            rss_peak = max(rss_peak, survivor.memory_info().rss)
            progress = crowd.latest("progress")
            if progress and progress["caughtUp"] == args.clients:
                recovered_at = time.time() * 1000
                break
            time.sleep(0.1)
        storm_seconds = time.monotonic() - storm_began
        cpu_storm = {
            name: round((sum(p.cpu_times()[:2]) - cpu_before[name]) / storm_seconds, 2)
            for name, p in watched.items()
        }
        time.sleep(args.after)
        rss_after = survivor.memory_info().rss
        sent = sender.stop()
        sender = None
        time.sleep(2)  # the last broadcasts arrive
        for node in nodes:
            node.tell("stop")
        crowd_done = crowd.wait_for("done", 60)
        live_done = live.wait_for("done", 60)
    finally:
        if sender is not None:
            sender.stop()
        for node in nodes:
            if node.process.poll() is None:
                node.process.kill()
        for process in processes.values():
            stop(process)
        broker.stop()

    caught = [t - killed_at for t in crowd_done["caughtUp"] if t is not None]
    samples = live_done["samples"]
    before = [lat for at, lat in samples if killed_at - args.baseline * 1000 / 2 <= at < killed_at]
    end = recovered_at if recovered_at is not None else killed_at + args.timeout * 1000
    during = [lat for at, lat in samples if killed_at <= at <= end]
    after = [lat for at, lat in samples if end < at <= end + args.after * 1000]
    complete = sum(
        1
        for index, (first, last, count) in enumerate(crowd_done["lastSeqs"])
        if last == sent[f"{room_prefix}{index % args.rooms}"] and count == last - first + 1
    )
    p99_before, p99_during = percentile(before, 0.99), percentile(during, 0.99)
    ratio = p99_during / p99_before if p99_before and p99_during else None
    seconds = (max(caught) / 1000) if len(caught) == args.clients else None
    return {
        "parameters": {
            "broker": args.broker,
            "clients": args.clients,
            "live": args.live,
            "rooms": args.rooms,
            "rate_per_room": args.rate,
            "baseline_s": args.baseline,
            "after_s": args.after,
            "clients_kind": "plain neffos.js (reconnect option)" if plain else "helper",
            "server": args.server,
            "accept_rate": args.accept_rate,
            "helper_min_delay_ms": args.min_delay,
            "join_notices": not args.quiet,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
        },
        "connect_s": round(connect_s, 2),
        "recovered_all_s": seconds,
        "recovered_s_p50_p99": [
            round((percentile(caught, 0.5) or 0) / 1000, 3),
            round((percentile(caught, 0.99) or 0) / 1000, 3),
        ],
        "recovered_clients": len(caught),
        "complete_in_order_clients": complete,
        "broken_sequences": crowd_done["broken"],
        "missed_broadcasts": crowd_done["missed"],
        "not_recovered": crowd_done["notRecovered"],
        "duplicates_dropped": crowd_done["duplicatesDropped"],
        "reconnect_attempts": crowd_done["reconnects"],
        "cpu_cores_during_storm": cpu_storm,
        "survivor_rss_mb": {
            "before": round(rss_before / 2**20, 1),
            "peak": round(rss_peak / 2**20, 1),
            "after": round(rss_after / 2**20, 1),
        },
        "live_latency_ms": {
            "p50_before": percentile(before, 0.5),
            "p99_before": p99_before,
            "p50_during": percentile(during, 0.5),
            "p99_during": p99_during,
            "p99_ratio": ratio,
            "p50_after": percentile(after, 0.5),
            "p99_after": percentile(after, 0.99),
            "samples_before": len(before),
            "samples_during": len(during),
        },
        "targets": {
            "recovered_all_s": TARGET_SECONDS,
            "p99_ratio": TARGET_P99_RATIO,
            "met": seconds is not None
            and seconds <= TARGET_SECONDS
            and ratio is not None
            and ratio <= TARGET_P99_RATIO
            and complete == args.clients
            and not plain,
        },
    }


def summary(results: dict[str, Any]) -> str:
    p, live, rss = results["parameters"], results["live_latency_ms"], results["survivor_rss_mb"]
    cpu = results["cpu_cores_during_storm"]
    fmt = lambda value: "n/a" if value is None else f"{value:.1f}"  # noqa: E731
    return "\n".join(
        [
            f"reconnect storm on {p['broker']}, {p['server']}: {p['clients']} clients of a killed "
            "instance, "
            f"{p['live']} live clients on the survivor, {p['rooms']} rooms",
            f"  all recovered in {fmt(results['recovered_all_s'])} s "
            f"(p50 / p99 {results['recovered_s_p50_p99'][0]} / "
            f"{results['recovered_s_p50_p99'][1]} s; target <= {TARGET_SECONDS:g} s); "
            f"{results['complete_in_order_clients']}/{p['clients']} with every broadcast once, "
            f"in order; not recovered {results['not_recovered']}",
            f"  live clients p99 {fmt(live['p99_before'])} ms before, "
            f"{fmt(live['p99_during'])} ms during: x{fmt(live['p99_ratio'])} "
            f"(target <= x{TARGET_P99_RATIO:g}); {fmt(live['p99_after'])} ms in the "
            f"{p['after_s']:g} s after",
            f"  survivor RSS {rss['before']} MB before, peak {rss['peak']}, after {rss['after']}",
            "  CPU during the storm (cores): "
            + ", ".join(f"{name} {cores}" for name, cores in cpu.items()),
            f"  targets met: {results['targets']['met']}",
        ]
    )


def peer_summary(results: dict[str, Any]) -> str:
    p, live = results["parameters"], results["live_latency_ms"]
    seconds = results["recovered_all_s"]
    return (
        f"  peer, plain neffos.js clients ({p['server']}): all live again in "
        f"{'n/a' if seconds is None else f'{seconds:.1f}'} s; broadcasts missed "
        f"{results['missed_broadcasts']} ({results['broken_sequences']} clients with a hole); "
        f"live clients p99 {live['p99_before']:.1f} -> {live['p99_during'] or 0:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.storm", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--broker", choices=("redis", "nats"), default="redis")
    parser.add_argument(
        "--server",
        choices=("daphne", "uvicorn", "both"),
        default="both",
        help="the instances' ASGI server (both: one storm under each, in this run)",
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--live",
        type=int,
        default=1000,
        help="the survivor's own clients, which measure latency (default 1,000: a balanced "
        "two-instance deployment that loses one instance)",
    )
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0, help="broadcasts per room per second")
    parser.add_argument(
        "--min-delay",
        type=float,
        default=None,
        help="the helper's minDelay in ms (default: the helper's own)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="rooms whose joins the chat does not announce (no notice to every member)",
    )
    parser.add_argument(
        "--accept-rate",
        type=float,
        default=None,
        help="the instances' NEFFOS_ACCEPT_RATE (new connections a second; default: no limit)",
    )
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after all recovered")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--no-peer",
        dest="peer",
        action="store_false",
        help="skip the same storm with plain neffos.js clients (its own reconnect, no recovery)",
    )
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks/storm.json")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    servers = ("daphne", "uvicorn") if args.server == "both" else (args.server,)
    document: dict[str, Any] = {}
    for name in servers:
        args.server = name
        document[name] = storm(args)
        print(summary(document[name]), flush=True)
        if args.peer:
            document[f"{name}, plain neffos.js"] = peer = storm(args, plain=True)
            print(peer_summary(peer), flush=True)
    out = args.out or (REPO / "docs" / "benchmarks" / "storm.json" if args.docs else None)
    if out is not None:
        out.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {out}")
    met = [results["targets"]["met"] for name, results in document.items() if name in servers]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
