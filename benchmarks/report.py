"""Turn one run's results into the target table (ratios from the same run) and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .subjects import (
    CHANNELS_NATS,
    CHANNELS_REDIS_CORE,
    CHANNELS_REDIS_PUBSUB,
    NEFFOS_NATS,
    NEFFOS_REDIS,
)

RAW_REDIS_PY = "(i) redis-py PubSub API"
RAW_SOCKET = "(ii) raw socket + hiredis"
RAW_NATS_PUBSUB = "(iii) nats-py pub/sub"
RAW_NATS_REQUEST = "(iv) nats-py request/reply"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _paired_ratio(
    samples: dict[str, list[float]],
    medians: dict[str, Any],
    numerator: str,
    denominator: str,
) -> float | None:
    """The median over rounds of numerator/denominator *measured in the same round*.

    Rounds are interleaved, so a slow spell of the machine hits both sides of a round alike;
    pairing them cancels it, where a ratio of two medians can pair a fast round of one with a
    slow round of the other. Without per-round samples: the ratio of the medians.
    """
    tops, bottoms = samples.get(numerator, []), samples.get(denominator, [])
    rounds = min(len(tops), len(bottoms))  # a case measured once pairs with round one
    pairs = [
        top / bottom
        for top, bottom in zip(tops[:rounds], bottoms[:rounds], strict=True)
        if isinstance(top, (int, float)) and isinstance(bottom, (int, float)) and bottom
    ]
    if not pairs:
        return _ratio(medians.get(numerator), medians.get(denominator))
    pairs.sort()
    middle = len(pairs) // 2
    return pairs[middle] if len(pairs) % 2 else (pairs[middle - 1] + pairs[middle]) / 2


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the benchmark issue, with the ratio measured and whether it holds.

    Throughput ratios ((a), (e)) are medians of per-round ratios (see :func:`_paired_ratio`).
    """
    a_medians = results.get("a_send_receive", {})
    a_samples = results.get("samples", {}).get("a_send_receive", {})
    b = results.get("b_round_trip", {})
    c = results.get("c_fan_out", {})
    e_medians = results.get("e_ask", {}).get("sequential", {})
    e_samples = results.get("samples", {}).get("e_ask_sequential", {})

    def a_ratio(numerator: str, denominator: str) -> float | None:
        return _paired_ratio(a_samples, a_medians, numerator, denominator)

    def e_ratio(numerator: str, denominator: str) -> float | None:
        return _paired_ratio(e_samples, e_medians, numerator, denominator)

    f = results.get("f_memory", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, value: float | None, goal: float, unit: str = "×", lower: bool = False):
        holds = None if value is None else (value <= goal if lower else value >= goal)
        comparison = "≤" if lower else "≥"
        rows.append(
            {
                "target": name,
                "measured": value,
                "goal": f"{comparison} {goal:g}{unit}",
                "holds": holds,
            }
        )

    row("(a) Redis vs channels_redis pubsub", a_ratio(NEFFOS_REDIS, CHANNELS_REDIS_PUBSUB), 10)
    row("(a) Redis vs (i) redis-py PubSub API", a_ratio(NEFFOS_REDIS, RAW_REDIS_PY), 1)
    row("(a) Redis vs (ii) raw socket limit", a_ratio(NEFFOS_REDIS, RAW_SOCKET), 0.25)
    row("(a) NATS vs channels-nats", a_ratio(NEFFOS_NATS, CHANNELS_NATS), 2)
    row("(a) NATS vs (iii) nats-py pub/sub", a_ratio(NEFFOS_NATS, RAW_NATS_PUBSUB), 0.5)
    for ours, broker_anchors in (
        (NEFFOS_REDIS, (CHANNELS_REDIS_CORE, CHANNELS_REDIS_PUBSUB)),
        (NEFFOS_NATS, (CHANNELS_NATS,)),
    ):
        anchor_p50 = [b[name]["p50_ms"] for name in broker_anchors if name in b]
        if ours in b and anchor_p50:
            row(
                f"(b) {ours} p50 vs best anchor p50",
                b[ours]["p50_ms"] / min(anchor_p50),
                1,
                lower=True,
            )
        if ours in b:
            row(f"(b) {ours} p99", b[ours]["p99_ms"], 2, " ms", lower=True)
    for ours in (NEFFOS_REDIS, NEFFOS_NATS):
        sizes = c.get(ours, {})
        if "1000" in sizes and CHANNELS_NATS in c and "1000" in c[CHANNELS_NATS]:
            row(
                f"(c) {ours} deliveries/s at 1,000 vs channels-nats",
                sizes["1000"]["deliveries_per_s"] / c[CHANNELS_NATS]["1000"]["deliveries_per_s"],
                2,
            )
        if "1000" in sizes and "1" in sizes:
            row(
                f"(c) {ours} group_send/s at 1,000 vs at 1 member",
                sizes["1000"]["group_sends_per_s"] / sizes["1"]["group_sends_per_s"],
                0.5,
            )
    for ours in (NEFFOS_REDIS, NEFFOS_NATS):
        row(f"(e) {ours} sequential asks vs (iv)", e_ratio(ours, RAW_NATS_REQUEST), 0.8)
    for ours in (NEFFOS_REDIS, NEFFOS_NATS):
        if ours in f:
            row(
                f"(f) {ours} RSS for 10k channels / 1k groups",
                f[ours]["setup_mb"],
                30,
                " MB",
                lower=True,
            )
            row(
                f"(f) {ours} RSS growth after churn",
                f[ours]["churn_growth_pct"],
                5,
                " %",
                lower=True,
            )
    return rows


def target_table_rst(rows: list[dict[str, Any]]) -> str:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - target",
        "     - measured",
        "     - goal",
        "     - holds",
    ]
    for entry in rows:
        measured = "n/a" if entry["measured"] is None else f"{entry['measured']:.2f}"
        holds = {True: "yes", False: "**no**", None: "n/a"}[entry["holds"]]
        lines += [
            f"   * - {entry['target']}",
            f"     - {measured}",
            f"     - {entry['goal']}",
            f"     - {holds}",
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def bars(name: str, values: dict[str, float], title: str, xlabel: str) -> None:
        if not values:
            return
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.2))
        labels = list(values)
        ax.barh(labels, [values[label] for label in labels], color="#4477aa")
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for index, label in enumerate(labels):
            ax.text(values[label], index, f" {values[label]:,.0f}", va="center", fontsize=8)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    bars(
        "a_send_receive",
        results.get("a_send_receive", {}),
        "(a) send → receive, one producer loop",
        "messages/s",
    )
    rtt = results.get("b_round_trip", {})
    bars(
        "b_round_trip_p50",
        {k: v["p50_ms"] * 1000 for k, v in rtt.items()},
        "(b) ping-pong round trip, p50",
        "µs",
    )
    for key, title in (
        ("sequential", "(e) asks, sequential"),
        ("concurrent", "(e) asks, 100 in flight"),
    ):
        bars(f"e_ask_{key}", results.get("e_ask", {}).get(key, {}), title, "asks/s")
    memory = results.get("f_memory", {})
    bars(
        "f_memory",
        {k: v["setup_mb"] for k, v in memory.items()},
        "(f) RSS for 10,000 channels in 1,000 groups",
        "MB",
    )
    for key, title, metric in (
        ("c_fan_out", "(c) group fan-out, members in one process", "deliveries_per_s"),
        ("d_fan_out_processes", "(d) fan-out, members in 4 processes", "deliveries_per_s"),
    ):
        series = results.get(key, {})
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for subject, sizes in series.items():
            members = sorted(sizes, key=int)
            ax.plot(
                [int(m) for m in members],
                [sizes[m][metric] for m in members],
                marker="o",
                label=subject,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("group members")
        ax.set_ylabel("deliveries/s")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
