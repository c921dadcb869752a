"""What history costs: group_send, fan-out and replay, history groups against plain ones, one run.

    python -m benchmarks.history            # about a minute
    python -m benchmarks.history --quick    # seconds: checks that it still runs
    python -m benchmarks.history --docs     # also write docs/benchmarks/history.rst and .json

On a private Redis and a private NATS server with JetStream (``channels_neffos.testing.brokers``),
in interleaved rounds so that a slow spell of this shared machine hits every case alike:

(1) **group_send** — one instance sends ``messages`` ``group_send``\\ s (``await`` one after the
other), another instance's one member receives them: messages/s from the first send to the last
delivery, to a plain group and to a history group.
(2) **fan-out** — the same to a group with ``FANOUT_MEMBERS`` members on each of
``FANOUT_INSTANCES`` receiving instances: deliveries/s.
(3) **replay** — ``group_history(group)`` of a group holding ``REPLAY`` messages, and
``group_history(group, since=...)`` of its last half, from a process that is no member: p50/p99.
(4) **memory** — what the broker keeps for a group holding ``REPLAY`` messages of the benchmark's
size, per 1,000 messages: Redis ``MEMORY USAGE`` of its stream and hash; NATS the bytes of
its batches in the stream (on disk).

Targets (issue #20): history ``group_send`` ≥ 0.5 x plain; replay of 1,000 messages p50 ≤ 50 ms.
Every delivery is checked (count, and for history groups contiguous offsets in order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import time
from functools import partial
from pathlib import Path
from typing import Any

import nats
import redis

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos.channel_layer import NeffosChannelLayer
from channels_neffos.testing.brokers import NatsServer, RedisServer

from .__main__ import REPO, interleaved_rounds

MESSAGE = {"type": "bench.message", "text": "x" * 80}  # ~120 bytes once encoded
HISTORY = {"hist-*": {"size": 100_000, "ttl": 3600}}
FANOUT_INSTANCES = 3
FANOUT_MEMBERS = 10
REPLAY = 1_000
#: Issue #20's targets.
TARGET_SEND_RATIO = 0.5
TARGET_REPLAY_P50_MS = 50.0
FULL: dict[str, Any] = {"messages": 100_000, "fanout_messages": 10_000, "reads": 200, "rounds": 5}
QUICK: dict[str, Any] = {"messages": 300, "fanout_messages": 50, "reads": 10, "rounds": 1}


BROKERS = ("Redis", "NATS")


def _layer(url: str, prefix: str) -> NeffosChannelLayer:
    if url.startswith("nats://"):
        return NatsChannelLayer(
            servers=[url], prefix=prefix, history=HISTORY, capacity=1_000_000, presence=False
        )
    return RedisChannelLayer(hosts=[url], prefix=prefix, history=HISTORY, capacity=1_000_000)


async def _send_and_receive(
    url: str, history: bool, messages: int, instances: int, members: int
) -> float:
    """Deliveries/s of ``messages`` group_sends to ``members`` members on each of ``instances``
    receiving instances; checks every delivery."""
    prefix = "hb" + secrets.token_hex(4)
    group = ("hist-" if history else "plain-") + secrets.token_hex(4)
    sender = _layer(url, prefix)
    receivers = [_layer(url, prefix) for _ in range(instances)]
    channels = []
    for receiver in receivers:
        for _ in range(members):
            channel = await receiver.new_channel()
            await receiver.group_add(group, channel)
            channels.append((receiver, channel))
    await sender.group_send(group, MESSAGE)  # warm: every connection is up before timing
    for receiver, channel in channels:
        await asyncio.wait_for(receiver.receive(channel), 30)

    async def drain(receiver: NeffosChannelLayer, channel: str) -> list[int]:
        offsets = []
        for _ in range(messages):
            message = await asyncio.wait_for(receiver.receive(channel), 60)
            offsets.append(message["__position__"]["offset"] if history else 0)
        return offsets

    draining = [asyncio.ensure_future(drain(r, c)) for r, c in channels]
    started = time.perf_counter()
    for _ in range(messages):
        await sender.group_send(group, MESSAGE)
    received = await asyncio.gather(*draining)
    elapsed = time.perf_counter() - started
    if history:
        for offsets in received:
            if offsets != list(range(2, messages + 2)):
                raise AssertionError("a history member saw a hole, a duplicate or another order")
    for layer in (sender, *receivers):
        await layer.close()
    return messages * len(channels) / elapsed


async def _replay(url: str, reads: int) -> dict[str, float]:
    prefix = "hr" + secrets.token_hex(4)
    group = "hist-" + secrets.token_hex(4)
    sender, reader = _layer(url, prefix), _layer(url, prefix)
    for n in range(REPLAY):
        await sender.group_send(group, {**MESSAGE, "n": n})
    await sender.close()
    whole, since = [], []
    middle = None
    for _ in range(reads):
        started = time.perf_counter()
        found = await reader.group_history(group)
        whole.append((time.perf_counter() - started) * 1000)
        if len(found.messages) != REPLAY or not found.recovered:
            raise AssertionError(f"replay returned {len(found.messages)} of {REPLAY}")
        middle = found.messages[REPLAY // 2 - 1]["__position__"]
        started = time.perf_counter()
        half = await reader.group_history(group, since=middle)
        since.append((time.perf_counter() - started) * 1000)
        if len(half.messages) != REPLAY // 2 or not half.recovered:
            raise AssertionError("replay since the middle was not the second half")
    await reader.close()
    return {
        "all_p50_ms": _percentile(whole, 50),
        "all_p99_ms": _percentile(whole, 99),
        "since_half_p50_ms": _percentile(since, 50),
        "since_half_p99_ms": _percentile(since, 99),
    }


async def _memory(url: str) -> dict[str, float]:
    prefix = "hm" + secrets.token_hex(4)
    group = "hist-" + secrets.token_hex(4)
    sender = _layer(url, prefix)
    for n in range(REPLAY):
        await sender.group_send(group, {**MESSAGE, "n": n})
    await sender.close()
    if url.startswith("nats://"):
        client = await nats.connect(url)
        try:
            info = await client.jetstream().stream_info(f"{prefix}_history")
        finally:
            await client.close()
        return {"bytes_per_1000": info.state.bytes / REPLAY * 1000, "kept": REPLAY}
    client = redis.Redis.from_url(url)
    try:
        stream = f"{prefix}:h:{group}"
        used = int(client.memory_usage(stream, samples=0) or 0)
        used += int(client.memory_usage(f"{stream}:m", samples=0) or 0)
        kept = int(client.xlen(stream))
    finally:
        client.close()
    return {"bytes_per_1000": used / kept * 1000, "kept": kept}


def _percentile(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = REPO / "docs" / "benchmarks" if args.docs else args.out
    with RedisServer() as redis_server, NatsServer() as nats_server:
        urls = {"Redis": redis_server.url, "NATS": nats_server.url}
        n, fan = sizes["messages"], sizes["fanout_messages"]
        cases = {}
        for broker, url in urls.items():
            for kind, history in (("plain", False), ("history", True)):
                cases[f"{broker} group_send {kind}"] = partial(
                    _send_and_receive, url, history, n, 1, 1
                )
                cases[f"{broker} fan-out {kind}"] = partial(
                    _send_and_receive, url, history, fan, FANOUT_INSTANCES, FANOUT_MEMBERS
                )
        rates = interleaved_rounds("history", cases, sizes["rounds"])
        replay = {broker: asyncio.run(_replay(url, sizes["reads"])) for broker, url in urls.items()}
        memory = {broker: asyncio.run(_memory(url)) for broker, url in urls.items()}
    results: dict[str, Any] = {
        "machine": f"{platform.system()} {platform.machine()}, {platform.python_version()}",
        "sizes": sizes,
        "rates": rates,
        "history_over_plain": {
            broker: {
                case: rates[f"{broker} {case} history"] / rates[f"{broker} {case} plain"]
                for case in ("group_send", "fan-out")
            }
            for broker in BROKERS
        },
        "replay": replay,
        "memory": memory,
    }
    results["targets"] = {
        broker: {
            "group_send_ratio": results["history_over_plain"][broker]["group_send"]
            >= TARGET_SEND_RATIO,
            "replay_p50": replay[broker]["all_p50_ms"] <= TARGET_REPLAY_P50_MS,
        }
        for broker in BROKERS
    }
    print(json.dumps(results, indent=2))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "history.rst").write_text(table(results))
        plot(results, out / "history.png")
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """Deliveries/s, plain against history, per case and broker; replay latency per broker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = results["rates"]
    figure, (rate, replay) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{broker}\n{case}" for case in ("group_send", "fan-out") for broker in BROKERS]
    width = 0.38
    for offset, kind in ((-width / 2, "plain"), (width / 2, "history")):
        values = [
            rates[f"{broker} {case} {kind}"]
            for case in ("group_send", "fan-out")
            for broker in BROKERS
        ]
        rate.bar([i + offset for i in range(len(labels))], values, width, label=kind)
    rate.set_xticks(range(len(labels)), labels)
    rate.set_ylabel("deliveries/s")
    rate.set_title("plain and history groups, same run")
    rate.legend()
    for offset, (key, label) in zip(
        (-width / 2, width / 2),
        (("all_p50_ms", f"all {REPLAY:,}"), ("since_half_p50_ms", f"last {REPLAY // 2:,}")),
        strict=True,
    ):
        values = [results["replay"][broker][key] for broker in BROKERS]
        replay.bar([i + offset for i in range(len(BROKERS))], values, width, label=label)
    replay.set_xticks(range(len(BROKERS)), list(BROKERS))
    replay.set_ylabel("group_history p50, ms")
    replay.set_title(f"replay (target p50 ≤ {TARGET_REPLAY_P50_MS:.0f} ms)")
    replay.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def table(results: dict[str, Any]) -> str:
    rates, ratios = results["rates"], results["history_over_plain"]
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - case (deliveries/s)",
        "     - broker",
        "     - plain group",
        "     - history group",
        "     - history / plain",
    ]
    labels = {
        "group_send": "group_send, 1 member",
        "fan-out": f"fan-out, {FANOUT_INSTANCES} instances x {FANOUT_MEMBERS} members",
    }
    for case, label in labels.items():
        for broker in BROKERS:
            lines += [
                f"   * - {label}",
                f"     - {broker}",
                f"     - {rates[f'{broker} {case} plain']:,.0f}",
                f"     - {rates[f'{broker} {case} history']:,.0f}",
                f"     - {ratios[broker][case]:.2f}",
            ]
    lines += [
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - replay",
        "     - broker",
        "     - p50 ms",
        "     - p99 ms",
    ]
    for broker in BROKERS:
        replay = results["replay"][broker]
        lines += [
            f"   * - ``group_history`` of {REPLAY:,} messages",
            f"     - {broker}",
            f"     - {replay['all_p50_ms']:.1f}",
            f"     - {replay['all_p99_ms']:.1f}",
            f"   * - ``group_history(since=...)``: the last {REPLAY // 2:,}",
            f"     - {broker}",
            f"     - {replay['since_half_p50_ms']:.1f}",
            f"     - {replay['since_half_p99_ms']:.1f}",
        ]
    memory = results["memory"]
    lines += [
        "",
        "What the broker keeps per 1,000 messages of ~120 bytes: Redis "
        f"{memory['Redis']['bytes_per_1000'] / 1024:,.0f} KiB of memory (``MEMORY USAGE`` of the "
        f"stream and its hash), NATS {memory['NATS']['bytes_per_1000'] / 1024:,.0f} KiB in its "
        "stream (on disk; batches of this run's size).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
