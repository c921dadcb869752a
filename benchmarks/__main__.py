"""Run the benchmarks on private brokers: ``python -m benchmarks [--count N] [--json FILE]``."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from channels_neffos import NatsChannelLayer, RedisChannelLayer
from channels_neffos.testing.brokers import NatsServer, RedisServer

from .ask import layer_ask_rate, raw_nats_request_rate
from .throughput import layer_factories, send_receive_rate


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000, help="messages per layer (send)")
    parser.add_argument("--asks", type=int, default=2000, help="asks per measurement")
    parser.add_argument("--concurrency", type=int, default=100, help="asks in flight")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"send_receive_msgs_per_s": {}, "asks_per_s": {}}
    with RedisServer() as redis_server, NatsServer() as nats_server:
        for name, factory in layer_factories(redis_server.url, nats_server.url).items():
            rate = asyncio.run(send_receive_rate(factory, args.count))
            results["send_receive_msgs_per_s"][name] = rate
            print(f"send→receive  {name:28s} {rate:>10,.0f} msg/s")
        ask_layers: dict[str, Any] = {
            "channels_neffos Redis": lambda: RedisChannelLayer(hosts=[redis_server.url]),
            "channels_neffos NATS": lambda: NatsChannelLayer(servers=[nats_server.url]),
        }
        for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
            rows = {
                name: asyncio.run(layer_ask_rate(factory, args.asks, concurrency))
                for name, factory in ask_layers.items()
            }
            rows["raw nats-py request/reply"] = asyncio.run(
                raw_nats_request_rate(nats_server.url, args.asks, concurrency)
            )
            results["asks_per_s"][mode] = rows
            for name, rate in rows.items():
                print(f"ask {mode:10s} {name:28s} {rate:>10,.0f} asks/s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({**results, "args": vars(args)}, out, indent=2)
    return results


if __name__ == "__main__":
    main()
