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
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from channels_neffos.testing.brokers import NatsServer, free_port  # noqa: E402


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daphne for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


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
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"

    instances: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for name, port in (("A", args.port_a), ("B", args.port_b)):
            instances.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "testproject.asgi:application",
                    ],
                    cwd=HERE,
                    env={**env, "INSTANCE_NAME": name},
                )
            )
            urls.append(f"http://127.0.0.1:{port}/")
        for url, process in zip(urls, instances, strict=True):
            wait_for_http(url, process)
        broker = (
            env.get("NATS_URL")
            if env.get("CHANNEL_LAYER", "nats") == "nats"
            else env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        print(f"\nchannels_neffos chat demo — broker {broker}\n")
        print(f"  instance A: {urls[0]}")
        print(f"  instance B: {urls[1]}\n")
        print(
            "Open both, join the same room, chat: messages cross instances. Ctrl-C stops.",
            flush=True,
        )
        if args.check:
            return 0
        signal.pause()
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        for process in instances:
            process.terminate()
        for process in instances:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if nats is not None:
            nats.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
