"""A real browser (Debian's headless Chromium, driven by playwright-core) on both instances."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import TESTPROJECT, Instance, node, run_node_steps


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium)")
    return found


@pytest.mark.parametrize("two_instances", ["nats"], indirect=True)
def test_message_typed_on_a_appears_on_b(two_instances: tuple[str, str], tmp_path: Path) -> None:
    url_a, url_b = two_instances
    run = subprocess.run(
        [node(), "e2e/browser.mjs", url_a, url_b, str(tmp_path), chromium()],
        cwd=TESTPROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = run.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"ok": False, "detail": run.stderr}
    assert result["ok"], result["detail"]
    assert result["detail"]["instances"] == ["A", "B"]
    assert (tmp_path / "instance-b.png").stat().st_size > 1000
    print(f"screenshots: {tmp_path}")


@pytest.mark.parametrize("two_instances_on", [("nats", "daphne")], indirect=True)
def test_the_page_of_a_killed_instance_recovers_on_the_other(
    two_instances_on: list[Instance], tmp_path: Path
) -> None:
    """The demo with the client helper: kill A; A's page reconnects to B and shows what was said
    meanwhile (testproject/e2e/browser_recovery.mjs)."""
    a, b = two_instances_on

    def kill(step: str) -> None:
        assert step == "kill-a", step
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)

    results = run_node_steps(
        "browser_recovery.mjs", a.url, b.url, str(tmp_path), chromium(), on_step=kill
    )
    assert len(results) == 4
    assert (tmp_path / "recovered-on-b.png").stat().st_size > 1000
