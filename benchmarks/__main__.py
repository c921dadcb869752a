"""Run the benchmarks on private brokers: ``python -m benchmarks [--count N]``."""

from __future__ import annotations

import argparse
import asyncio
import json

from channels_neffos.testing.brokers import NatsServer, RedisServer

from .throughput import layer_factories, send_receive_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="messages per layer")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with RedisServer() as redis_server, NatsServer() as nats_server:
        for name, factory in layer_factories(redis_server.url, nats_server.url).items():
            rate = asyncio.run(send_receive_rate(factory, args.count))
            results[name] = rate
            print(f"{name:28s} {rate:>10,.0f} msg/s  (send→receive, {args.count} messages)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"send_receive_msgs_per_s": results, "count": args.count}, out, indent=2)


if __name__ == "__main__":
    main()
