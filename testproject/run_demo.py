"""Start the chat demo: a nats-server (unless NATS_URL is set) and two daphne instances.

Usage: python testproject/run_demo.py [--port-a 8001] [--port-b 8002] [--check]

Prints both URLs and runs until Ctrl-C, then stops everything it started. ``--check`` starts
everything, fetches both pages once and exits (used by the test suite so the demo never rots).
Set ``CHANNEL_LAYER=redis`` (and ``REDIS_URL``) to run the demo on Redis instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from instances import instance_environment, start_instance, stop, wait_listening  # noqa: E402

from channels_neffos.testing.brokers import NatsServer, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port-a", type=int, default=int(os.environ.get("PORT_A", 8001)))
    parser.add_argument("--port-b", type=int, default=int(os.environ.get("PORT_B", 8002)))
    parser.add_argument("--check", action="store_true", help="start, fetch both pages, stop")
    args = parser.parse_args()
    if not (HERE / "node_modules" / "neffos.js").is_dir():
        raise SystemExit("run `npm ci` in testproject/ first (scripts/demo does it for you)")

    nats: NatsServer | None = None
    env = dict(os.environ)
    if env.get("CHANNEL_LAYER", "nats") == "nats" and not env.get("NATS_URL"):
        nats = NatsServer(free_port())
        nats.start()
        env["NATS_URL"] = nats.url
    env = instance_environment(env)

    instances: list[subprocess.Popen[bytes]] = []
    try:
        ports = {"A": args.port_a, "B": args.port_b}
        for name, port in ports.items():
            instances.append(start_instance(name, port, env))
        for port, process in zip(ports.values(), instances, strict=True):
            wait_listening(port, process)
        urls = [f"http://127.0.0.1:{port}/" for port in ports.values()]
        for url in urls:
            with urllib.request.urlopen(url, timeout=10) as page:
                if b"channels_neffos chat" not in page.read():
                    raise SystemExit(f"{url} did not serve the chat page")
        broker = (
            env.get("NATS_URL")
            if env.get("CHANNEL_LAYER", "nats") == "nats"
            else env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        print(f"\nchannels_neffos chat demo — broker {broker}\n")
        print(f"  instance A: {urls[0]}")
        print(f"  instance B: {urls[1]}\n")
        native = urls[0].replace("http", "ws", 1) + "ws/native?room=lobby"
        print("Open both, join the same room, chat: messages cross instances.")
        print(f"Plain WebSocket clients (no neffos.js): {native}, and the same on B.")
        print("Ctrl-C stops.", flush=True)
        if args.check:
            return 0
        signal.pause()
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        for process in instances:
            stop(process)
        if nats is not None:
            nats.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
