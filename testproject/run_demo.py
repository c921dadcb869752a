"""Start the chat demo: a nats-server (unless NATS_URL is set) and two daphne instances.

Usage: python testproject/run_demo.py [--port-a 8001] [--port-b 8002] [--check]

Prints both URLs and runs until stopped, then stops everything it started. ``--check`` starts
everything, fetches both pages once and exits (used by the test suite so the demo never rots).
Set ``CHANNEL_LAYER=redis`` (and ``REDIS_URL``) to run the demo on Redis instead.

How it stops (tested in tests/e2e/test_demo.py):

* SIGINT (Ctrl-C), SIGTERM (``kill``, a process manager) and SIGHUP (the terminal closed) do
  the same: stop both instances and the nats-server the demo started, then die of that same
  signal, as a Unix program that cleans up should. A shell reports 128 + the signal number (130,
  143, 129); a process manager sees a stop by its signal, not a failure. This holds during
  startup too: whatever was started so far is stopped. A signal ignored when the demo starts
  (``nohup`` ignores SIGHUP) stays ignored.
* The handler raises :class:`StopRequested` in the main thread, which unwinds to the one
  ``ExitStack`` holding every child's stop. It is raised at most once, and never while a child
  is being started and registered there (raised in between, it would leak that child): the
  :class:`Phase` says when it may be raised. Later signals change nothing: each stop is bounded
  (SIGTERM, 10 s, then SIGKILL).
* SIGKILL runs no cleanup. So on Linux every child is started with ``PR_SET_PDEATHSIG``
  (``instances.killed_with_parent``): the kernel SIGKILLs it when the demo dies, however it
  dies (a SIGKILLed demo only leaves the nats-server's temporary directory behind). Elsewhere,
  stop the process group: an interactive shell gives the demo its own, which its children
  share, so ``kill -- -PGID`` stops them all.
"""

from __future__ import annotations

import argparse
import enum
import os
import shutil
import signal
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import NoReturn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from instances import (  # noqa: E402
    instance_environment,
    killed_with_parent,
    start_instance,
    stop,
    wait_listening,
)

from channels_neffos.testing.brokers import NatsServer, free_port  # noqa: E402

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(Exception):
    """One of ``STOP_SIGNALS`` arrived: stop everything, then die of ``signo``."""

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo


class Phase(enum.Enum):
    """What a stop signal does now."""

    INTERRUPTIBLE = "raise StopRequested at once"
    STARTING_CHILD = "raise it once the child being started is registered for its stop"
    STOPPING = "nothing more: StopRequested was raised, or the cleanup is under way"


class StopSignals:
    """Turns ``STOP_SIGNALS`` into one :class:`StopRequested`, when the :class:`Phase` allows."""

    def __init__(self) -> None:
        self.phase = Phase.INTERRUPTIBLE
        self.received: int | None = None  # the first stop signal, which the demo dies of
        for signo in STOP_SIGNALS:
            if signal.getsignal(signo) is not signal.SIG_IGN:
                signal.signal(signo, self._on_signal)

    def _on_signal(self, signo: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signo
        self._raise_if_due()

    def _raise_if_due(self) -> None:
        if self.received is not None and self.phase is Phase.INTERRUPTIBLE:
            self.phase = Phase.STOPPING
            raise StopRequested(self.received)

    @contextmanager
    def starting_child(self) -> Iterator[None]:
        """Hold a stop back while the block starts a child and registers its stop."""
        self.phase = Phase.STARTING_CHILD
        try:
            yield
        finally:
            if self.phase is Phase.STARTING_CHILD:
                self.phase = Phase.INTERRUPTIBLE
        self._raise_if_due()

    def stopping(self) -> None:
        """The cleanup begins: from now on a signal interrupts nothing."""
        self.phase = Phase.STOPPING
        if self.received is not None:
            say(f"\n{signal.Signals(self.received).name}: stopping…")


def say(text: str) -> None:
    # After SIGHUP the terminal may be gone: writing to it fails, and must not stop the cleanup.
    with suppress(OSError):
        print(text, flush=True)


def die_of(signo: int) -> NoReturn:
    """Exit by ``signo`` itself, so the parent sees how the demo ended (a shell: 128 + signo)."""
    with suppress(OSError):
        sys.stdout.flush()
    signal.signal(signo, signal.SIG_DFL)
    os.kill(os.getpid(), signo)
    sys.exit(128 + signo)  # reached only if the signal is blocked


def serve(args: argparse.Namespace, stops: StopSignals, cleanup: ExitStack) -> None:
    """Start the broker (if needed) and both instances, registering each one's stop."""
    env = dict(os.environ)
    if env.get("CHANNEL_LAYER", "nats") == "nats" and not env.get("NATS_URL"):
        nats = NatsServer(free_port())
        cleanup.callback(shutil.rmtree, nats.workdir, ignore_errors=True)
        nats.preexec_fn = killed_with_parent()
        with stops.starting_child():
            cleanup.callback(nats.stop)
            nats.start()
        env["NATS_URL"] = nats.url
    ports = {"A": args.port_a, "B": args.port_b}
    # Each page reconnects to the other instance if its own goes away.
    env["CHAT_PEERS"] = ",".join(f"ws://127.0.0.1:{port}" for port in ports.values())
    env = instance_environment(env)

    processes = []
    for name, port in ports.items():
        with stops.starting_child():
            process = start_instance(name, port, env, die_with_parent=True)
            cleanup.callback(stop, process)
        processes.append(process)
    for port, process in zip(ports.values(), processes, strict=True):
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
    for (name, url), process in zip(zip(ports, urls, strict=True), processes, strict=True):
        print(f"  instance {name}: {url}  (pid {process.pid})")
    print()
    native = urls[0].replace("http", "ws", 1) + "ws/native?room=lobby"
    print("Open both, join the same room, chat: messages cross instances.")
    print(
        f"Stop A while you chat on B — kill {processes[0].pid} drains it (its page is closed with "
        f"code 4012), kill -9 {processes[0].pid} kills it: A's page reconnects to B and shows "
        "what was said meanwhile."
    )
    print(f"Plain WebSocket clients (no neffos.js): {native}, and the same on B.")
    print("Ctrl-C (or SIGTERM, SIGHUP) stops everything.", flush=True)
    if args.check:
        return
    while True:
        signal.pause()  # until a stop signal's StopRequested


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

    stops = StopSignals()
    try:
        with ExitStack() as cleanup:
            try:
                serve(args, stops, cleanup)
            finally:
                stops.stopping()
    except StopRequested:
        pass  # everything is stopped: die of the signal below
    if stops.received is not None:
        die_of(stops.received)
    return 0


if __name__ == "__main__":
    sys.exit(main())
