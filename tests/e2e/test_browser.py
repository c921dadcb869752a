"""A real browser (Debian's headless Chromium, driven by playwright-core) on both instances."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import TESTPROJECT, node


@pytest.mark.parametrize("two_instances", ["nats"], indirect=True)
def test_message_typed_on_a_appears_on_b(two_instances: tuple[str, str], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium)")
    url_a, url_b = two_instances
    run = subprocess.run(
        [node(), "e2e/browser.mjs", url_a, url_b, str(tmp_path), chromium],
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
