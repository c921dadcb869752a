"""Redis Cluster scale-out: per-node work and aggregate deliveries, classic vs sharded pub/sub.

    python -m benchmarks.cluster                 # 1, 3 and 6 primaries (a few minutes)
    python -m benchmarks.cluster --quick         # 1 and 3 primaries, tiny: does it still run?
    python -m benchmarks.cluster --out DIR       # results.json and cluster.png into DIR
    python -m benchmarks.cluster --docs          # ... into docs/benchmarks/cluster/

For each cluster size (private clusters started here, ``channels_neffos.testing.brokers``) and
each ``cluster_pubsub`` mode, in the same run: ``INSTANCES`` receiving processes (OS processes,
each one layer) with members in ``GROUPS`` groups — every group has members on two instances —
and one publishing process that ``group_send``s to the groups in turn, ``MESSAGES`` in all,
as fast as the layer lets it. Measured:

* aggregate deliveries/s — deliveries counted by the receivers / (last delivery - first send);
* per primary, over the run: CPU seconds (``INFO cpu``), pub/sub commands run
  (``INFO commandstats``: ``PUBLISH``/``SPUBLISH``), bytes in and out (``INFO stats``: clients,
  plus the cluster bus's publish messages from ``CLUSTER INFO``);
* balance — the busiest primary's CPU, and its pub/sub messages, over the mean.

Targets (docs/scale-out): sharded, each primary's work ≈ 1/N of the total (busiest ≤ 1.5 x the
mean); on 3 primaries, aggregate deliveries ≥ 2 x classic in the same run. This box has two cores
for the clients and every server: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from channels_neffos import RedisChannelLayer
from channels_neffos.testing.brokers import RedisCluster

INSTANCES = 4
GROUPS = 300
MESSAGES = 20_000
QUICK = {"sizes": [1, 3], "messages": 2_000}
FULL = {"sizes": [1, 3, 6], "messages": MESSAGES}


def receiver_main(args: dict[str, Any]) -> None:
    """One receiving instance: join its groups, say ready, count deliveries until told."""

    async def run() -> None:
        layer = RedisChannelLayer(**args["config"], capacity=1_000_000)
        channel = await layer.new_channel()
        for group in args["groups"]:
            await layer.group_add(group, channel)
        Path(args["ready"]).touch()
        count, last = 0, 0.0
        expected = args["expected"]
        while count < expected:
            try:
                await asyncio.wait_for(layer.receive(channel), args["idle"])
            except asyncio.TimeoutError:
                break
            count += 1
            last = time.time()
        result = {"count": count, "last": last, "counters": dict(layer.counters)}
        Path(args["result"]).write_text(json.dumps(result))
        await layer.close()

    asyncio.run(run())


def node_stats(url: str) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("all")
        cluster = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    if isinstance(cluster, bytes):
        cluster = cluster.decode()
    fields = dict(line.split(":", 1) for line in str(cluster).splitlines() if ":" in line)

    def calls(command: str) -> float:
        return float(info.get(f"cmdstat_{command}", {}).get("calls", 0))

    return {
        "cpu_s": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "publish": calls("publish"),
        "spublish": calls("spublish"),
        "net_in": float(info["total_net_input_bytes"]),
        "net_out": float(info["total_net_output_bytes"]),
        "bus_publish_received": float(fields.get("cluster_stats_messages_publish_received", 0)),
    }


def run_case(
    cluster: RedisCluster, mode: str, messages: int, scratch: Path, group_count: int = GROUPS
) -> dict[str, Any]:
    prefix = f"bench{mode}"
    config = {"hosts": cluster.urls, "cluster": True, "cluster_pubsub": mode, "prefix": prefix}
    groups = [f"room{n}" for n in range(group_count)]
    # Every group has members on two instances: group n on instances n % I and (n + 1) % I.
    members = {
        i: [g for n, g in enumerate(groups) if i in (n % INSTANCES, (n + 1) % INSTANCES)]
        for i in range(INSTANCES)
    }
    per_group = messages // group_count
    children = []
    for i in range(INSTANCES):
        args = {
            "config": config,
            "groups": members[i],
            "ready": str(scratch / f"{mode}-ready-{i}"),
            "result": str(scratch / f"{mode}-result-{i}.json"),
            "expected": per_group * len(members[i]),
            "idle": 5.0,
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.cluster", "--receiver", json.dumps(args)]
            )
        )
    deadline = time.monotonic() + 60
    while not all((scratch / f"{mode}-ready-{i}").exists() for i in range(INSTANCES)):
        if time.monotonic() > deadline:
            raise RuntimeError("the receiving instances did not start")
        time.sleep(0.05)
    before = {url: node_stats(url) for url in cluster.urls}

    publisher_counters: dict[str, int] = {}

    async def publish() -> float:
        layer = RedisChannelLayer(**config, capacity=1_000_000)
        await layer.new_channel()
        started = time.time()
        for n in range(per_group):
            for group in groups:
                await layer.group_send(group, {"type": "m", "n": n})
        await layer.close()
        publisher_counters.update(layer.counters)
        return started

    started = asyncio.run(publish())
    for child in children:
        child.wait(120)
    after = {url: node_stats(url) for url in cluster.urls}
    results = [
        json.loads((scratch / f"{mode}-result-{i}.json").read_text()) for i in range(INSTANCES)
    ]
    delivered = sum(r["count"] for r in results)
    finished = max(r["last"] for r in results)
    nodes = [
        {key: after[url][key] - before[url][key] for key in after[url]} for url in cluster.urls
    ]
    cpu = [node["cpu_s"] for node in nodes]
    mean_cpu = statistics.mean(cpu)
    # Pub/sub work per primary: the messages it took from clients plus those the bus brought it.
    handled = [n["publish"] + n["spublish"] + n["bus_publish_received"] for n in nodes]
    mean_handled = statistics.mean(handled)
    return {
        "deliveries_per_s": delivered / (finished - started),
        "delivered": delivered,
        "expected": per_group * 2 * group_count,
        "nodes": nodes,
        "cpu_max_over_mean": max(cpu) / mean_cpu if mean_cpu > 0 else 0.0,
        "cpu_total_s": sum(cpu),
        "handled_max_over_mean": max(handled) / mean_handled if mean_handled > 0 else 0.0,
        "receiver_counters": [r["counters"] for r in results],
        "publisher_counters": publisher_counters,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Deliveries/s per cluster size and mode; the pub/sub messages each primary handled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    figure, (rate, share) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for offset, mode in ((-width / 2, "classic"), (width / 2, "sharded")):
        values = [results["sizes"][size][mode]["deliveries_per_s"] for size in sizes]
        rate.bar([i + offset for i in range(len(sizes))], values, width, label=mode)
    rate.set_xticks(range(len(sizes)), [f"{size} primaries" for size in sizes])
    rate.set_ylabel("deliveries/s (all instances)")
    rate.set_title("aggregate deliveries, same run")
    rate.legend()
    for index, size in enumerate(sizes):
        for mode, marker, color in (("classic", "o", "C0"), ("sharded", "s", "C1")):
            nodes = results["sizes"][size][mode]["nodes"]
            handled = [n["publish"] + n["spublish"] + n["bus_publish_received"] for n in nodes]
            offset = -0.1 if mode == "classic" else 0.1
            share.scatter(
                [index + offset] * len(handled),
                handled,
                marker=marker,
                color=color,
                label=mode if index == 0 else None,
                alpha=0.7,
            )
    share.set_xticks(range(len(sizes)), [f"{size} primaries" for size in sizes])
    share.set_ylabel("pub/sub messages handled")
    share.set_title("per primary (classic: every one handles all)")
    share.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--docs", action="store_true", help="write into docs/benchmarks/cluster")
    parser.add_argument("--sizes", help="comma-separated numbers of primaries (default 1,3,6)")
    parser.add_argument("--messages", type=int, help="group_sends in each case")
    parser.add_argument("--groups", type=int, default=GROUPS, help=f"groups (default {GROUPS})")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        receiver_main(json.loads(args.receiver))
        return {}
    sizes = dict(QUICK if args.quick else FULL)
    if args.sizes:
        sizes["sizes"] = [int(size) for size in args.sizes.split(",")]
    if args.messages:
        sizes["messages"] = args.messages
    docs = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "cluster"
    out = docs if args.docs else args.out or Path(tempfile.mkdtemp(prefix="neffos-cluster-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"instances": INSTANCES, "groups": args.groups, "sizes": {}}
    for size in sizes["sizes"]:
        with RedisCluster(size) as cluster, tempfile.TemporaryDirectory() as scratch:
            row = {}
            for mode in ("classic", "sharded"):
                row[mode] = run_case(cluster, mode, sizes["messages"], Path(scratch), args.groups)
                case = row[mode]
                cpu = ", ".join(f"{node['cpu_s']:.2f}" for node in case["nodes"])
                print(
                    f"{size} primaries, {mode:8}: {case['deliveries_per_s']:>9,.0f} deliveries/s "
                    f"({case['delivered']}/{case['expected']}), CPU s per node [{cpu}], "
                    f"busiest/mean CPU {case['cpu_max_over_mean']:.2f}, "
                    f"pub/sub messages {case['handled_max_over_mean']:.2f}",
                    flush=True,
                )
            row["sharded_over_classic"] = (
                row["sharded"]["deliveries_per_s"] / row["classic"]["deliveries_per_s"]
            )
            results["sizes"][str(size)] = row
            print(f"{size} primaries: sharded/classic = {row['sharded_over_classic']:.2f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "cluster.png")
    print(f"results: {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
