"""The real neffos.js client (Node) against two daphne instances sharing a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import TESTPROJECT, node


def test_chat_across_two_instances(two_instances: tuple[str, str]) -> None:
    url_a, url_b = two_instances
    run = subprocess.run(
        [node(), "e2e/scenario.mjs", url_a, url_b],
        cwd=TESTPROJECT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    try:
        results = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"the scenario printed no results:\n{run.stdout}\n{run.stderr}")
    failed = {name: r["detail"] for name, r in results.items() if not r["ok"]}
    assert not failed, json.dumps(failed, indent=2)
    assert len(results) >= 16, results
    assert run.returncode == 0, run.stderr


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
