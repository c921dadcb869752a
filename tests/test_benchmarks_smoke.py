"""A tiny run of every benchmark so they never rot (the real run: python -m benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import profile
from benchmarks.__main__ import main
from benchmarks.subjects import NEFFOS_NATS, NEFFOS_REDIS


def test_every_workload_runs_and_reports(tmp_path: Path) -> None:
    results = main(["--quick", "--out", str(tmp_path)])
    assert not results["errors"], results["errors"]
    for workload in (
        "a_send_receive",
        "b_round_trip",
        "c_fan_out",
        "d_fan_out_processes",
        "f_memory",
    ):
        assert {NEFFOS_REDIS, NEFFOS_NATS} <= set(results[workload]), workload
    assert set(results["e_ask"]["sequential"]) >= {NEFFOS_REDIS, NEFFOS_NATS}
    assert results["targets"], "no target could be computed"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["a_send_receive"][NEFFOS_REDIS] > 0
    assert len(list(tmp_path.glob("*.png"))) >= 6
    assert (tmp_path / "targets.rst").read_text().startswith(".. list-table::")


def test_the_profiles_of_workload_a_are_written(tmp_path: Path) -> None:
    written = profile.main(["--quick", "--out", str(tmp_path)])
    assert len(written) == 4
    for path in written:
        text = path.read_text()
        assert "messages:" in text.splitlines()[0]
        assert "channels_neffos" in text  # our frames show in the call tree
        assert path.with_suffix(".html").exists()
