"""What ``symmetric_encryption_keys`` costs: send→receive with and without it, in one run.

    python -m benchmarks.encryption            # a minute or two
    python -m benchmarks.encryption --quick    # seconds: checks that it still runs
    python -m benchmarks.encryption --docs     # also write docs/benchmarks/encryption.rst

Each layer runs plain and encrypted, round after round on the same private brokers, so the ratio
"encrypted / plain" is measured under the same load. channels_redis core, which encrypts with the
same option, is the peer. Workloads as in ``python -m benchmarks``: (a) send→receive throughput
between two instances (every message crosses the broker), (b) ping-pong round trips.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path
from typing import Any

from channels_neffos.testing.brokers import NatsServer, RedisServer
from channels_neffos.testing.conformance import LayerSpec

from . import workloads
from .__main__ import REPO, interleaved_rounds
from .subjects import CAPACITY

KEYS = ["benchmark-secret-1"]
FULL = {"count": 20_000, "peer_count": 2_000, "round_trips": 1_000, "rounds": 5}
QUICK = {"count": 200, "peer_count": 50, "round_trips": 20, "rounds": 1}


def layers(redis_url: str, nats_url: str) -> dict[str, LayerSpec]:
    """``{name: spec}``: each layer plain, then encrypted."""
    bases = {
        "channels_neffos Redis": LayerSpec(
            "channels_neffos.RedisChannelLayer",
            {"hosts": [redis_url], "capacity": CAPACITY, "prefix": "benchenc"},
        ),
        "channels_neffos NATS": LayerSpec(
            "channels_neffos.NatsChannelLayer",
            {"servers": [nats_url], "capacity": CAPACITY, "prefix": "benchenc"},
        ),
    }
    if importlib.util.find_spec("channels_redis") is not None:
        bases["channels_redis core"] = LayerSpec(
            "channels_redis.core.RedisChannelLayer",
            {"hosts": [redis_url], "capacity": CAPACITY, "prefix": "benchenc"},
        )
    specs: dict[str, LayerSpec] = {}
    for name, spec in bases.items():
        specs[name] = spec
        specs[f"{name} encrypted"] = LayerSpec(
            spec.backend, {**spec.config, "symmetric_encryption_keys": KEYS}
        )
    return specs


def run(sizes: dict[str, int], specs: dict[str, LayerSpec]) -> dict[str, Any]:
    def count_for(name: str) -> int:
        # channels_redis core needs a Redis round trip per receive: fewer messages, same rate.
        return sizes["peer_count"] if name.startswith("channels_redis") else sizes["count"]

    rates = interleaved_rounds(
        "encryption_send_receive",
        {
            name: lambda spec=spec, name=name: workloads.send_receive_rate(spec, count_for(name))
            for name, spec in specs.items()
        },
        sizes["rounds"],
    )
    latency = interleaved_rounds(
        "encryption_round_trip",
        {
            name: lambda spec=spec: workloads.ping_pong_latency(spec, sizes["round_trips"])
            for name, spec in specs.items()
        },
        sizes["rounds"],
    )
    ratios = {
        name: {
            "rate": rates[f"{name} encrypted"] / rates[name],
            "p50": latency[f"{name} encrypted"]["p50_ms"] / latency[name]["p50_ms"],
        }
        for name in specs
        if not name.endswith(" encrypted")
        and isinstance(rates.get(name), float)
        and isinstance(rates.get(f"{name} encrypted"), float)
    }
    return {"send_receive": rates, "round_trip": latency, "encrypted_over_plain": ratios}


def table_rst(results: dict[str, Any]) -> str:
    rows = [
        ".. list-table:: Encryption cost, measured in one run (ratios: encrypted / plain)",
        "   :header-rows: 1",
        "",
        "   * - layer",
        "     - messages/s plain",
        "     - messages/s encrypted",
        "     - rate ratio",
        "     - p50 round trip plain / encrypted (ms)",
        "     - p50 ratio",
    ]
    rates, latency = results["send_receive"], results["round_trip"]
    for name, ratio in results["encrypted_over_plain"].items():
        sealed = f"{name} encrypted"
        rows += [
            f"   * - {name}",
            f"     - {rates[name]:,.0f}",
            f"     - {rates[sealed]:,.0f}",
            f"     - {ratio['rate']:.2f}",
            f"     - {latency[name]['p50_ms']:.2f} / {latency[sealed]['p50_ms']:.2f}",
            f"     - {ratio['p50']:.2f}",
        ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks/encryption.*")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with RedisServer() as redis_server, NatsServer() as nats_server:
        results = run(sizes, layers(redis_server.url, nats_server.url))
    results["meta"] = {
        "sizes": sizes,
        "python": platform.python_version(),
        "seconds": time.perf_counter() - started,
    }
    table = table_rst(results)
    (args.out / "encryption.json").write_text(json.dumps(results, indent=2))
    (args.out / "encryption.rst").write_text(table)
    print("\n" + table)
    if args.docs:
        docs = REPO / "docs" / "benchmarks"
        (docs / "encryption.json").write_text(json.dumps(results, indent=2))
        (docs / "encryption.rst").write_text(table)
    return results


if __name__ == "__main__":
    main()
