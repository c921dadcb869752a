"""Run every benchmark on private brokers and write results.json, target table and plots.

    python -m benchmarks                # the full run (a few minutes)
    python -m benchmarks --quick        # tiny sizes, seconds: checks that everything still runs
    python -m benchmarks --docs         # also refresh docs/benchmarks/ (plots and target table)

Workloads: (a) send→receive throughput, (b) ping-pong round trips, (c) group fan-out in one
process, (d) fan-out with members in 4 OS processes, (e) ask round trips, (f) memory — against
both channels_neffos layers, channels_redis (core and pubsub), channels-nats, and the raw
limits of redis-py and nats-py (see anchors.py). Ratios only mean something within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from channels_neffos.testing.brokers import NatsServer, RedisServer

from . import anchors, processes, report, workloads
from .subjects import CHANNELS_REDIS_CORE, Subject, layer_subjects

REPO = Path(__file__).resolve().parent.parent
#: After its first round, a case is measured again only while it has taken less than this.
ROUND_BUDGET_SECONDS = 5.0
#: Every sample behind a median, by workload; saved in results.json as "samples".
SAMPLES: dict[str, dict[str, list[Any]]] = {}
FULL = {
    "count": 20_000,
    "rounds": 5,
    # (b) and (e) time single round trips, the most sensitive to this machine's slow spells,
    # and a run of them takes about a second: more rounds, for a steadier median.
    "latency_rounds": 9,
    "round_trips": 2_000,
    "fan_out_sizes": [1, 10, 100, 1000],
    "deliveries": 20_000,
    "process_sizes": [10, 100, 1000],
    "asks": 2_000,
    "concurrency": 100,
    "channels": 10_000,
    "groups": 1_000,
    "churn_ops": 1_000_000,
    "churn_seconds": 30,
}
QUICK = {
    "count": 300,
    "rounds": 2,
    "latency_rounds": 2,
    "round_trips": 50,
    "fan_out_sizes": [1, 10],
    "deliveries": 200,
    "process_sizes": [4],
    "asks": 40,
    "concurrency": 4,
    "channels": 200,
    "groups": 20,
    "churn_ops": 2_000,
    "churn_seconds": 2,
}


def measure(label: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run one measurement in a fresh event loop; a failure is recorded, not fatal."""
    started = time.perf_counter()
    try:
        value = asyncio.run(work())
    except Exception as exc:
        traceback.print_exc()
        print(f"  {label}: FAILED ({exc!r})", flush=True)
        return {"error": repr(exc)}
    print(f"  {label}: {summarize(value)}  [{time.perf_counter() - started:.1f}s]", flush=True)
    return value


def summarize(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}/s"
    return ", ".join(f"{k}={v:,.2f}" for k, v in value.items() if isinstance(v, (int, float)))


def run(
    sizes: dict[str, Any], subjects: list[Subject], redis_url: str, nats_url: str
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    print(f"(a) send → receive, median of up to {sizes['rounds']} interleaved rounds", flush=True)
    cases: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {}
    for s in subjects:
        cases[s.name] = lambda s=s: workloads.send_receive_rate(s.spec, sizes["count"])
        if s.ours:
            cases[f"{s.name} (same instance)"] = lambda s=s: workloads.send_receive_rate(
                s.spec, sizes["count"], True
            )
            cases[f"{s.name} (alternating 2 channels)"] = lambda s=s: workloads.send_receive_rate(
                s.spec, sizes["count"], channels=2
            )
            cases[f"{s.name} (alternating 2 processes)"] = lambda s=s: workloads.send_receive_rate(
                s.spec, sizes["count"], channels=2, receivers=2
            )
    cases[report.RAW_REDIS_PY] = lambda: anchors.redis_py_pubsub_rate(redis_url, sizes["count"])
    cases[report.RAW_SOCKET] = lambda: anchors.raw_socket_psubscribe_rate(redis_url, sizes["count"])
    cases[report.RAW_NATS_PUBSUB] = lambda: anchors.nats_pubsub_rate(nats_url, sizes["count"])
    results["a_send_receive"] = interleaved_rounds("a_send_receive", cases, sizes["rounds"])

    print(f"(b) ping-pong round trips, median of {sizes['latency_rounds']} rounds", flush=True)
    results["b_round_trip"] = interleaved_rounds(
        "b_round_trip",
        {
            s.name: lambda s=s: workloads.ping_pong_latency(s.spec, sizes["round_trips"])
            for s in subjects
        },
        sizes["latency_rounds"],
    )

    print(f"(c) group fan-out, one process, median of {sizes['rounds']} rounds", flush=True)
    results["c_fan_out"] = per_group_size(
        "c_fan_out",
        subjects,
        sizes["fan_out_sizes"],
        sizes["deliveries"],
        workloads.fan_out,
        sizes["rounds"],
    )
    print("(d) fan-out across 4 OS processes (one round: no target depends on it)", flush=True)
    results["d_fan_out_processes"] = per_group_size(
        "d_fan_out_processes",
        subjects,
        sizes["process_sizes"],
        sizes["deliveries"],
        processes.fan_out_across_processes,
        1,
    )

    print(f"(e) ask round trips, median of {sizes['latency_rounds']} rounds", flush=True)
    asks: dict[str, Any] = {}
    for mode, concurrency in (("sequential", 1), ("concurrent", sizes["concurrency"])):
        ask_cases: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            s.name: lambda s=s, c=concurrency: workloads.layer_ask_rate(s.spec, sizes["asks"], c)
            for s in subjects
            if s.ours
        }

        async def raw(concurrency: int = concurrency) -> float:
            ask_once, close = await anchors.nats_request_reply(nats_url)
            try:
                await ask_once()
                return await workloads.timed_asks(sizes["asks"], concurrency, ask_once)
            finally:
                await close()

        ask_cases[report.RAW_NATS_REQUEST] = raw
        print(f"  {mode}", flush=True)
        asks[mode] = interleaved_rounds(f"e_ask_{mode}", ask_cases, sizes["latency_rounds"])
    results["e_ask"] = asks

    print("(f) memory", flush=True)
    results["f_memory"] = {}
    for s in subjects:
        slow = s.name == CHANNELS_REDIS_CORE  # every membership change is a Redis round trip
        results["f_memory"][s.name] = measure(
            s.name,
            lambda s=s, slow=slow: processes.memory_footprint(
                s.spec,
                sizes["channels"],
                sizes["groups"],
                sizes["churn_ops"],
                sizes["churn_seconds"] / (3 if slow else 1),
            ),
        )
    cleaned = drop_failures(results)
    cleaned["samples"] = dict(SAMPLES)
    SAMPLES.clear()
    return cleaned


def interleaved_rounds(
    label: str, cases: dict[str, Callable[[], Coroutine[Any, Any, Any]]], rounds: int
) -> dict[str, Any]:
    """Each case's median over ``rounds`` rounds, measuring every case once per round.

    Round after round, so that a slow spell of this shared machine hits all cases alike. A
    case whose first run took more than ``ROUND_BUDGET_SECONDS`` (channels_redis core: 20 s a
    run) is not repeated — judged by the first run only, so that a slow spell later on does not
    cut some cases' rounds short and leave their medians to the slow samples; a failed case is
    not retried and its error is kept instead. Results
    that are dicts (latency percentiles) get a median per key; every sample is kept
    in ``SAMPLES[label]``.
    """
    samples: dict[str, list[Any]] = {name: [] for name in cases}
    first_run = dict.fromkeys(cases, 0.0)
    combined: dict[str, Any] = {}
    for round_number in range(rounds):
        for name, work in cases.items():
            if name in combined or (round_number and first_run[name] > ROUND_BUDGET_SECONDS):
                continue
            started = time.perf_counter()
            value = measure(f"{name} [{round_number + 1}/{rounds}]", work)
            if not round_number:
                first_run[name] = time.perf_counter() - started
            if isinstance(value, dict) and "error" in value:
                combined[name] = value  # failed: keep the error, stop measuring it
            else:
                samples[name].append(value)
    for name, values in samples.items():
        if name not in combined:
            combined[name] = median_of(values)
            print(f"  {name}: {summarize(combined[name])} (median of {len(values)})", flush=True)
    SAMPLES[label] = samples
    return combined


def median_of(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {key: statistics.median(value[key] for value in values) for key in values[0]}
    return statistics.median(values)


def per_group_size(
    label: str,
    subjects: list[Subject],
    group_sizes: list[int],
    deliveries: int,
    workload: Callable[[Any, int, int], Coroutine[Any, Any, Any]],
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """``{subject: {members: result}}`` of a fan-out workload, medians of interleaved rounds."""
    cases: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        f"{s.name} × {n}": lambda s=s, n=n: workload(s.spec, n, deliveries)
        for s in subjects
        for n in group_sizes
    }
    medians = interleaved_rounds(label, cases, rounds)
    return {s.name: {str(n): medians[f"{s.name} × {n}"] for n in group_sizes} for s in subjects}


def drop_failures(results: dict[str, Any]) -> dict[str, Any]:
    """Keep failed measurements under "errors" so that ratios use only real numbers."""
    errors: dict[str, Any] = {}

    def clean(node: Any, path: str) -> Any:
        if isinstance(node, dict) and "error" in node and len(node) == 1:
            errors[path] = node["error"]
            return None
        if isinstance(node, dict):
            kept = {k: clean(v, f"{path}/{k}") for k, v in node.items()}
            return {k: v for k, v in kept.items() if v is not None}
        return node

    cleaned = clean(results, "")
    cleaned["errors"] = errors
    return cleaned  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--docs", action="store_true", help="copy plots and table into docs/")
    parser.add_argument("--only", help="comma-separated subject names (default: all)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with RedisServer() as redis_server, NatsServer() as nats_server:
        subjects = layer_subjects(redis_server.url, nats_server.url)
        if args.only:
            wanted = {name.strip() for name in args.only.split(",")}
            subjects = [s for s in subjects if s.name in wanted]
        results = run(sizes, subjects, redis_server.url, nats_server.url)
    results["meta"] = {
        "sizes": sizes,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": time.perf_counter() - started,
    }
    results["targets"] = report.targets(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = report.target_table_rst(results["targets"])
    (args.out / "targets.rst").write_text(table)
    plots = report.plot(results, args.out)
    print("\n" + table)
    print(
        f"results, table and {len(plots)} plots in {args.out} ({results['meta']['seconds']:.0f}s)"
    )
    if args.docs:
        docs = REPO / "docs" / "benchmarks"
        docs.mkdir(exist_ok=True)
        for path in [*plots, args.out / "targets.rst", args.out / "results.json"]:
            shutil.copy(path, docs / path.name)
    return results


if __name__ == "__main__":
    main()
