"""The live dashboard page (testproject/chat/dashboard.py) in headless Chromium, and
``manage.py neffos status`` against the two running instances."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from .conftest import Instance, run_node_steps


def status(instance: Instance) -> dict[str, object]:
    run = instance.manage("neffos", "status", "--json")
    assert run.returncode == 0, run.stderr
    [entry] = json.loads(run.stdout)["default"]
    return entry  # type: ignore[no-any-return]


@pytest.mark.parametrize("two_instances_on", [("nats", "daphne")], indirect=True)
def test_dashboard_and_status_show_both_instances(
    two_instances_on: list[Instance], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium)")
    a, b = two_instances_on
    entries: list[dict[str, object]] = []

    def on_step(step: str) -> None:
        assert step == "status", step
        entries.append(status(a))  # while both chat pages are connected

    results = run_node_steps(
        "dashboard.mjs", a.url, b.url, str(tmp_path), chromium, on_step=on_step
    )
    assert len(results) == 5

    [entry] = entries
    assert entry["reachable"]
    instances = entry["instances"]
    assert isinstance(instances, list)
    assert sorted(i["os_pid"] for i in instances) == sorted([a.pid, b.pid])
    assert all(i["groups"] >= 2 and i["connected"] for i in instances)  # ns.chat, its lobby
    assert all(i["connections"] == {"chat": 1} for i in instances), instances
    assert all(i["rooms"] == {"chat/lobby": 1} for i in instances), instances

    # The screenshot shows the page: its size, and text (dark pixels) in both tables' rows.
    pixels = image.imread(tmp_path / "dashboard.png")
    height, width = pixels.shape[:2]
    assert width == 1100 and height >= 300
    gray = pixels[..., :3].mean(axis=2)
    dark_rows = np.flatnonzero((gray < 0.5).sum(axis=1) > 3)
    assert len(dark_rows) > 60, "the screenshot shows (almost) no text"
    assert len(np.unique((pixels[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)) > 20
