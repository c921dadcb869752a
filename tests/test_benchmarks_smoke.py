"""A tiny run of the benchmarks so they never rot (the real run: python -m benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.__main__ import main


def test_benchmarks_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    main(["--count", "300", "--asks", "40", "--concurrency", "4", "--json", str(out)])
    results = json.loads(out.read_text())
    assert set(results["send_receive_msgs_per_s"]) >= {
        "channels_neffos Redis",
        "channels_neffos NATS",
    }
    assert all(rate > 0 for rate in results["send_receive_msgs_per_s"].values())
    for mode in ("sequential", "concurrent"):
        assert set(results["asks_per_s"][mode]) == {
            "channels_neffos Redis",
            "channels_neffos NATS",
            "raw nats-py request/reply",
        }
