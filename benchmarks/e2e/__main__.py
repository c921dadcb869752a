"""End-to-end WebSocket benchmark: what a WebSocket user sees, measured at the clients.

    python -m benchmarks.e2e                 # the full run (about 5-8 minutes on 2 cores)
    python -m benchmarks.e2e --quick         # tiny sizes, under a minute: does it all still run?
    python -m benchmarks.e2e --docs          # write the results into docs/benchmarks/e2e/
    python -m benchmarks.e2e --out DIR       # ... or into DIR (default: a new temporary dir)

Scenario: two server instances (separate OS processes) on one private broker (a fresh
redis-server or nats-server per run, started via channels_neffos.testing.brokers), N clients
per instance (full: 100, quick: 5), all in ONE room, clients in one Node process
(clients.mjs: the ``ws`` package, or the real neffos.js client). Once every client is connected
and has joined (a start barrier), each sends M messages at once (full: 10, quick: 3), each
carrying (sender, seq) and its send time; every client should receive every other client's
messages, on both instances. Measured at the clients:

* deliveries/s — unique deliveries / (last delivery - first send);
* loss — expected - received (a burst ends when everything arrived, nothing arrived for a few
  seconds, or at its time limit), duplicates, per-sender order violations;
* latency p50/p99 — receive time - send time (one clock: one Node process);
* peak RSS of each server process (psutil, sampled every 0.1 s during the run);
* a paced phase: messages at a fixed total rate of half the burst's, converted from deliveries
  to messages (0.5 x deliveries/s ÷ fan-out, fan-out = receivers per message) for 5 s (quick:
  1 s); its p50/p99 and loss. "p99 ≤ 20 ms at half the sustainable rate" is judged on it.

Subjects (subjects.py), each on daphne and on uvicorn (servers.py), in this fixed order, each
subject on both servers before the next:

(i) raw ASGI (apps.raw): no Channels, no Django, no broker; each process writes a frame to
    every *other* socket it holds in a plain ``for ... await send(...)`` loop. Nothing crosses
    instances, so each client expects M x (N - 1) messages: the server's physical writing limit.
(ii) plain Channels (consumers.PlainChatConsumer), what users build today: ``group_add`` on
    connect, ``group_send`` per message, ``self.send`` per delivery — on channels_redis pubsub,
    channels_redis core, channels-nats (the peers) and on our two layers, each with its default
    options (default capacities included: a peer that drops is what its users see).
(iii) our namespaces (consumers.BenchNeffosConsumer): a neffos ``Namespace`` whose ``chat``
    event broadcasts to the room, with the neffos.js client, on Redis and on NATS.

The clients do not offer permessage-deflate, so that both servers do the same work and the one
Node process does not spend its CPU inflating (uvicorn would compress, daphne does not).

Targets (report.py), per server, for (iii) on Redis and on NATS, every ratio from this run:
burst deliveries/s ≥ 0.5 x raw (i) on the same server; ≥ 5 x the best plain-Channels peer
(channels_redis pubsub/core, channels-nats — not our layers) on the same server; paced p99
≤ 20 ms; zero loss in the burst.

Outputs: results.json (every subject x server), targets.rst (target table), summary.rst (all
numbers), deliveries.png and latency.png. A run that fails or times out is reported with its
error and whatever it measured; it does not stop the others. Ratios only mean something within
one run: this machine (clients, servers and broker share its cores) is noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .runner import Sizes, node, run_case
from .subjects import SERVERS, SUBJECTS

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks" / "e2e"
FULL = Sizes(
    clients_per_instance=100,
    messages=10,
    paced_seconds=5,
    idle_seconds=3,
    burst_limit=30,
    drain_limit=15,
    run_limit=150,
)
QUICK = Sizes(
    clients_per_instance=5,
    messages=3,
    paced_seconds=1,
    idle_seconds=1.5,
    burst_limit=10,
    drain_limit=5,
    run_limit=45,
    settle_seconds=0.2,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--docs", action="store_true", help=f"write the results into {DOCS}")
    parser.add_argument("--out", type=Path, help="where to write them (default: a temp dir)")
    keys = ",".join(s.key for s in SUBJECTS)
    parser.add_argument("--subjects", help=f"comma-separated subset of: {keys}")
    parser.add_argument("--servers", help="comma-separated subset of: " + ",".join(SERVERS))
    parser.add_argument("--clients", type=int, help="clients per instance (N)")
    parser.add_argument("--messages", type=int, help="messages per client in the burst (M)")
    parser.add_argument(
        "--paced-fraction", type=float, help="the paced phase's rate, a fraction of the burst's"
    )
    return parser.parse_args(argv)


def _subset(wanted: str | None, known: list[str]) -> list[str]:
    if not wanted:
        return known
    chosen = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return [name for name in known if name in chosen]  # always in the fixed order


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.clients or args.messages or args.paced_fraction:
        sizes = Sizes(
            **{
                **sizes.__dict__,
                "clients_per_instance": args.clients or sizes.clients_per_instance,
                "messages": args.messages or sizes.messages,
                "paced_fraction": args.paced_fraction or sizes.paced_fraction,
            }
        )
    keys = _subset(args.subjects, [s.key for s in SUBJECTS])
    servers = _subset(args.servers, list(SERVERS))
    out = DOCS if args.docs else args.out or Path(tempfile.mkdtemp(prefix="neffos-e2e-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()  # others' work on this machine shows in every number
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results: report.Results = {}
    with tempfile.TemporaryDirectory(prefix="neffos-e2e-logs-") as logs:
        for subject in (s for s in SUBJECTS if s.key in keys):
            for server in servers:
                run = run_case(subject, server, sizes, Path(logs))
                results.setdefault(subject.name, {})[server] = run
                print(_progress(run), flush=True)
    document: dict[str, Any] = {
        "meta": {
            "started_at": started_at,
            "seconds": time.perf_counter() - started,
            "sizes": sizes.__dict__,
            "python": platform.python_version(),
            "node": subprocess.run([node(), "--version"], capture_output=True, text=True).stdout,
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "results": results,
        "errors": {
            f"{subject} / {server}": run["error"]
            for subject, by_server in results.items()
            for server, run in by_server.items()
            if run.get("error")
        },
        "targets": report.targets(results),
        "notes": report.notes(results, sizes.__dict__),
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "targets.rst").write_text(report.target_table_rst(document["targets"]))
    (out / "summary.rst").write_text(report.summary_rst(results, document["notes"]))
    plots = report.plot(results, out)
    print("\n" + report.summary_text(results) + "\n")
    print("\n".join(document["notes"]) + "\n")
    print(report.target_table_rst(document["targets"]))
    seconds = document["meta"]["seconds"]
    print(
        f"results.json, targets.rst, summary.rst and {len(plots)} plots in {out} ({seconds:.0f}s)"
    )
    return document


def _progress(run: dict[str, Any]) -> str:
    burst, paced = run.get("burst") or {}, run.get("paced") or {}
    text = f"{run['subject']} on {run['server']}: "
    if burst:
        text += (
            f"{burst['deliveries_per_s']:,.0f} deliveries/s, lost {burst['loss']} of "
            f"{burst['expected']}, p99 {burst['p99_ms'] or 0:.0f} ms"
        )
    if paced:
        text += f"; paced {paced['rate_msgs_per_s']:,.0f} msg/s p99 {paced['p99_ms'] or 0:.1f} ms"
    if run.get("error"):
        text += f"; ERROR {run['error'][:300]}"
    return text + f"  [{run['wall_seconds']:.1f}s]"


if __name__ == "__main__":
    main()
