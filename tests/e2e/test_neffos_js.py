"""Real Node clients (neffos.js, and plain `ws` sockets) against two daphne instances."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import TESTPROJECT, node, node_results


def run_scenario(script: str, urls: tuple[str, str]) -> dict[str, dict[str, object]]:
    """Run a Node scenario from testproject/e2e against the two instances; assert it passed."""
    run = subprocess.run(
        [node(), f"e2e/{script}", *urls],
        cwd=TESTPROJECT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return node_results(script, run)


def test_chat_across_two_instances(two_instances: tuple[str, str]) -> None:
    assert len(run_scenario("scenario.mjs", two_instances)) >= 16


def test_plain_websocket_clients_across_two_instances(two_instances: tuple[str, str]) -> None:
    """Native messages: no neffos.js, frames relayed as they are (testproject's ws/native)."""
    assert len(run_scenario("native.mjs", two_instances)) >= 5


def test_demo_starts_and_serves_both_instances() -> None:
    """The README's demo command, minus the waiting: both URLs printed and serving."""
    from channels_neffos.testing.brokers import free_port

    run = subprocess.run(
        [
            sys.executable,
            "run_demo.py",
            "--check",
            "--port-a",
            str(free_port()),
            "--port-b",
            str(free_port()),
        ],
        cwd=TESTPROJECT,
        capture_output=True,
        text=True,
        timeout=90,
        env={k: v for k, v in os.environ.items() if k not in ("NATS_URL", "CHANNEL_LAYER")},
    )
    assert run.returncode == 0, run.stderr
    assert "instance A: http://127.0.0.1:" in run.stdout
    assert "instance B: http://127.0.0.1:" in run.stdout
