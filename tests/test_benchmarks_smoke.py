"""A tiny run of every benchmark so they never rot (the real run: python -m benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import cluster, profile
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


def test_end_to_end_benchmark_runs(tmp_path: Path) -> None:
    """A tiny python -m benchmarks.e2e: raw, one plain-Channels peer and our namespaces."""
    from benchmarks.e2e.__main__ import main as e2e_main
    from benchmarks.e2e.subjects import NS_NATS, NS_REDIS, RAW, SERVERS

    tiny = ["--subjects", "raw,redis-pubsub,ns-redis,ns-nats", "--clients", "3", "--messages", "2"]
    document = e2e_main(["--quick", "--out", str(tmp_path), *tiny])
    results = document["results"]
    assert set(results) == {RAW, "channels_redis pubsub", NS_REDIS, NS_NATS}
    assert not document["errors"], document["errors"]
    for subject, by_server in results.items():
        assert set(by_server) == set(SERVERS), subject
        for server, run in by_server.items():
            assert run["burst"]["received"] > 0, (subject, server, run)
            assert run["paced"]["received"] > 0, (subject, server, run)
            assert max(run["rss_peak_mb"]) > 0, (subject, server, run)
    for subject in (NS_REDIS, NS_NATS):
        for server in SERVERS:
            burst = results[subject][server]["burst"]
            assert burst["expected"] == 6 * 5 * 2, burst  # 6 clients, 5 others each, 2 messages
            assert (burst["loss"], burst["duplicates"], burst["order_violations"]) == (0, 0, 0)
            assert results[subject][server]["paced"]["loss"] == 0
    assert len(document["targets"]) == 16
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"][NS_NATS]["uvicorn"]["burst"]["deliveries_per_s"] > 0
    assert (tmp_path / "targets.rst").read_text().startswith(".. list-table::")
    assert {p.name for p in tmp_path.glob("*.png")} == {"deliveries.png", "latency.png"}


def test_encryption_benchmark_compares_plain_and_encrypted_in_one_run(tmp_path: Path) -> None:
    from benchmarks import encryption

    results = encryption.main(["--quick", "--out", str(tmp_path)])
    assert {NEFFOS_REDIS, NEFFOS_NATS} <= set(results["encrypted_over_plain"])
    for ratio in results["encrypted_over_plain"].values():
        assert ratio["rate"] > 0 and ratio["p50"] > 0
    assert (tmp_path / "encryption.rst").read_text().startswith(".. list-table::")


def test_presence_benchmark_checks_answers_and_compares_presence_on_and_off(
    tmp_path: Path,
) -> None:
    from benchmarks import presence

    results = presence.main(["--quick", "--out", str(tmp_path)])
    sizes = [str(n) for n in presence.QUICK["group_sizes"]]
    for layer in (NEFFOS_REDIS, NEFFOS_NATS):
        for n in sizes:
            for operation in ("group_size", "group_members"):
                latency = results["query_latency"][layer][n][operation]
                assert 0 < latency["p50_ms"] <= latency["p95_ms"], (layer, n, operation, latency)
                check = results["checks"][layer][n][operation]
                assert check["exact"] and check["answers"] > 0, (layer, n, operation, check)
        target = results["target"][layer]
        assert target["members"] == max(presence.QUICK["group_sizes"])
        assert target["ratio"] == target["p95_ms"] / presence.TARGET_P95_MS
        ratios = results["on_over_off"][layer]
        assert ratios["add_discard_rate"] > 0 and ratios["first_group_add_p50"] > 0
    saved = json.loads((tmp_path / "presence.json").read_text())
    assert saved["checks"] == results["checks"]
    assert (tmp_path / "presence.rst").read_text().startswith(".. list-table::")


def test_the_a_b_comparison_reads_our_throughput_rows_and_compares_medians_and_bests() -> None:
    from benchmarks import ab

    results = {
        "a_send_receive": {NEFFOS_REDIS: 200.0, "channels_redis core": 10.0},
        "b_round_trip": {NEFFOS_REDIS: {"p50_ms": 0.3}},  # a latency, not a throughput
        "c_fan_out": {NEFFOS_NATS: {"10": {"deliveries_per_s": 5.0, "group_sends_per_s": 7.0}}},
        "meta": {"seconds": 70.0},
    }
    assert ab.throughput_rows(results, e2e=False) == {
        f"a_send_receive/{NEFFOS_REDIS}": 200.0,
        f"c_fan_out/{NEFFOS_NATS}/10/deliveries_per_s": 5.0,
        f"c_fan_out/{NEFFOS_NATS}/10/group_sends_per_s": 7.0,
    }
    rounds = [
        {"base": {"r": 100.0, "s": 100.0}, "head": {"r": 90.0, "s": 80.0}},
        {"base": {"r": 100.0, "s": 100.0}, "head": {"r": 100.0, "s": 90.0}},
        {"base": {"r": 80.0, "s": 100.0}, "head": {"r": 50.0, "s": 90.0}},
    ]
    r, s = ab.compare(rounds, 0.95)
    assert r == ("r", 100.0, 90.0, 0.9, 1.0, False)  # its best round is as good as base's
    assert s == ("s", 100.0, 90.0, 0.9, 0.9, True)  # slower by both measures


def test_cluster_benchmark_compares_classic_and_sharded_on_one_cluster(tmp_path: Path) -> None:
    results = cluster.main(["--sizes", "3", "--messages", "300", "--out", str(tmp_path)])
    row = results["sizes"]["3"]
    for mode in ("classic", "sharded"):
        assert row[mode]["delivered"] == row[mode]["expected"], row[mode]
        assert len(row[mode]["nodes"]) == 3
    sharded = [node["spublish"] for node in row["sharded"]["nodes"]]
    assert sum(sharded) == 300 and sum(n["publish"] for n in row["sharded"]["nodes"]) == 0
    assert (tmp_path / "results.json").exists()


def test_history_benchmark_checks_every_delivery_and_compares_history_with_plain(
    tmp_path: Path,
) -> None:
    from benchmarks import history

    results = history.main(["--quick", "--out", str(tmp_path)])
    for broker in history.BROKERS:
        for case in ("group_send", "fan-out"):
            plain = results["rates"][f"{broker} {case} plain"]
            kept = results["rates"][f"{broker} {case} history"]
            assert plain > 0 and kept > 0, (broker, case)
            assert results["history_over_plain"][broker][case] == kept / plain
        replay = results["replay"][broker]
        assert 0 < replay["all_p50_ms"] <= replay["all_p99_ms"]
        assert results["memory"][broker]["kept"] == history.REPLAY
    assert (tmp_path / "history.rst").read_text().startswith(".. list-table::")
    assert json.loads((tmp_path / "history.json").read_text())["rates"] == results["rates"]
    assert (tmp_path / "history.png").stat().st_size > 0
