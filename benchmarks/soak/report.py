"""The soak's numbers as reported: percentiles, RSS and CPU, the plot and the printed summary.

:func:`plot` and :func:`summary` read nothing but the judged results (the JSON that
:func:`benchmarks.soak.judge.judge` returns), so a run can be plotted and summed up again from it.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .expected import Delivery, Received
from .outage import Phases

#: The sampled processes (see :mod:`benchmarks.soak.sampler`): the instances, the broker, Node.
PROCESSES = ("a", "b", "broker", "node")
LABELS = {"a": "daphne A", "b": "daphne B", "broker": "broker", "node": "Node clients"}


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """How many ``values``, their median, 99th percentile and max (rounded; None if none)."""
    ordered = sorted(values)
    n = len(ordered)

    def pick(q: float) -> float | None:
        return round(ordered[min(n - 1, int(q * n))], 2) if n else None

    return {
        "n": n,
        "p50": pick(0.5),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2) if n else None,
    }


# -- RSS and CPU, from the driver's samples --------------------------------------------------------


def cpu_by_minute(samples: list[dict[str, Any]], start: float) -> dict[int, dict[str, float]]:
    """Mean CPU (cores) per minute: this benchmark's processes, and everyone else's."""
    rows: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for row in samples:
        t = row["t"] - start
        if t >= 0:
            ours = sum(row.get(f"{name}_cpu") or 0 for name in PROCESSES) / 100
            rows[int(t // 60)].append((ours, row["machine_cpu"] / 100 - ours))
    return {
        minute: {
            "cpu_ours_cores": round(sum(o for o, _ in values) / len(values), 2),
            "cpu_others_cores": round(max(0.0, sum(x for _, x in values) / len(values)), 2),
        }
        for minute, values in rows.items()
    }


def rss_summary(
    samples: list[dict[str, Any]], start: float, times: dict[str, float], phases: Phases
) -> dict[str, Any]:
    """RSS (MB) per process at moments of the run, and its trend outside the outage."""
    rows = [{**row, "t": row["t"] - start} for row in samples]
    stop = times["stop"]
    summary: dict[str, Any] = {}
    for name in PROCESSES:
        points = [(row["t"], row[name]) for row in rows if row.get(name) is not None]

        def at(t: float, points: list[tuple[float, float]] = points) -> float | None:
            later = [v for s, v in points if s >= t]
            return round(later[0], 1) if later else None

        # Trends: from the first minute on (connecting is over) to the outage, and from 30 s
        # after the recovery to the end; the outage itself may move memory in one step.
        before = [(s, v) for s, v in points if 60 <= s < phases.start]
        after = [(s, v) for s, v in points if phases.end + 30 <= s <= stop]
        summary[name] = {
            "at_start": at(0),
            "at_1_min": at(60),
            "before_outage": _last_before(points, times["broker_killed"]),
            "at_end": _last_before(points, stop),
            "max": round(max((v for _, v in points), default=0), 1),
            "trend_before_outage_mb_per_min": _slope(before),
            "trend_after_outage_mb_per_min": _slope(after),
        }
    summary["samples"] = [
        {
            key: (round(value, 2) if isinstance(value, float) else value)
            for key, value in row.items()
        }
        for row in rows
    ]
    return summary


def _last_before(points: list[tuple[float, float]], t: float) -> float | None:
    earlier = [v for s, v in points if s <= t]
    return round(earlier[-1], 1) if earlier else None


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope, MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(s for s, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((s - mean_t) ** 2 for s, _ in points)
    if var == 0:
        return None
    cov = sum((s - mean_t) * (v - mean_v) for s, v in points)
    return round(cov / var * 60, 3)


def plot_bins(
    expected: list[Delivery],
    received: Received,
    sends: dict[int, tuple[int, str, float]],
    width: float = 10.0,
) -> list[dict[str, Any]]:
    """Per ``width`` seconds of send time: latency percentiles of deliveries, and losses."""
    latencies: dict[int, list[float]] = defaultdict(list)
    for (message, _), t in received.items():
        sent_at = sends[message][2]
        latencies[int(sent_at // width)].append((t - sent_at) * 1000)
    lost: dict[int, Counter[str]] = defaultdict(Counter)
    for message, receiver, src, dst, sent_at in expected:
        if (message, receiver) not in received:
            lost[int(sent_at // width)]["lost_same" if src == dst else "lost_cross"] += 1
    bins = []
    for index in sorted(set(latencies) | set(lost)):
        stats = percentiles(latencies[index])
        bins.append(
            {
                "t": (index + 0.5) * width,
                "p50": stats["p50"],
                "p99": stats["p99"],
                "max": stats["max"],
                "lost_same": lost[index]["lost_same"],
                "lost_cross": lost[index]["lost_cross"],
            }
        )
    return bins


# -- the plot and the printed summary ------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    """RSS over time (top), broadcast latency and losses per 10 s (below), outage marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = results["timeline_s"]
    samples = results["rss_mb"]["samples"]
    broker = results["parameters"]["broker"]
    fig, (rss, growth, cpu, latency, lost) = plt.subplots(
        5,
        1,
        figsize=(10, 13),
        sharex=True,
        gridspec_kw={"height_ratios": [2.5, 2, 1.5, 2, 1.3]},
    )
    for name in ("a", "b", "broker"):
        points = [(row["t"] / 60, row[name]) for row in samples if row.get(name) is not None]
        label = f"{broker}-server" if name == "broker" else LABELS[name]
        rss.plot([p[0] for p in points], [p[1] for p in points], label=label)
        # The same, as the change since the first minute (connecting is over by then).
        first = results["rss_mb"][name]["at_1_min"]
        if first is not None:
            growth.plot([p[0] for p in points], [p[1] - first for p in points], label=label)
    rss.set_ylabel("RSS (MB)")
    rss.set_ylim(bottom=0)
    growth.set_ylabel("RSS change since\nminute 1 (MB)")
    # Scaled to the run from minute 1 to the end of the activity: the climb while connecting,
    # and the clients all closing at the end, would flatten the rest.
    changes = [
        row[name] - results["rss_mb"][name]["at_1_min"]
        for row in samples
        for name in ("a", "b", "broker")
        if 60 <= row["t"] <= times["stop"]
        and row.get(name) is not None
        and results["rss_mb"][name]["at_1_min"]
    ]
    if changes:
        growth.set_ylim(min(changes) - 1, max(changes) + 1)
    parameters = results["parameters"]
    rss.set_title(
        f"Soak: {parameters['clients']:,} neffos.js clients, 2 daphne instances, {broker}, "
        f"{parameters['minutes']:g} min, broker killed for {parameters['outage_seconds']:g} s"
    )

    minutes = [row["t"] / 60 for row in samples]
    ours = [sum(row.get(f"{name}_cpu") or 0 for name in PROCESSES) / 100 for row in samples]
    cpu.plot(minutes, ours, label="this benchmark's processes")
    cpu.plot(minutes, [row["machine_cpu"] / 100 for row in samples], label="whole machine")
    cpu.set_ylabel("CPU (cores)")
    cpu.set_ylim(0, (os.cpu_count() or 2) * 1.05)

    bins = results["plot_bins"]
    centers = [b["t"] / 60 for b in bins]
    for key, label in (("p50", "p50"), ("p99", "p99"), ("max", "max")):
        latency.plot(
            centers, [b[key] for b in bins], label=f"broadcast {label}", drawstyle="steps-mid"
        )
    latency.set_yscale("log")
    latency.set_ylabel("latency per 10 s (ms)")
    width = 10 / 60
    lost.bar(centers, [b["lost_same"] for b in bins], width=width, label="lost, same instance")
    lost.bar(
        centers,
        [b["lost_cross"] for b in bins],
        width=width,
        bottom=[b["lost_same"] for b in bins],
        label="lost, cross-instance",
    )
    lost.set_ylabel("lost deliveries\nper 10 s (by send)")
    lost.set_xlabel("minutes since the clients started")

    for axis in (rss, growth, cpu, latency, lost):
        axis.axvspan(
            times["broker_killed"] / 60,
            times["broker_back"] / 60,
            color="red",
            alpha=0.15,
            label="broker down",
        )
        if times.get("recovered") is not None and times["recovered"] > times["broker_back"]:
            axis.axvspan(
                times["broker_back"] / 60,
                times["recovered"] / 60,
                color="orange",
                alpha=0.25,
                label="recovery",
            )
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize="small", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _ms(stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return "n/a"
    return f"{stats['p50']:.1f} / {stats['p99']:.1f} / {stats['max']:.1f} ms (n={stats['n']:,})"


def summary(results: dict[str, Any]) -> str:
    """The run in a screenful of text."""
    p = results["parameters"]
    t = results["timeline_s"]
    b = results["broadcasts"]
    rates = results["measured_rates_per_s"]
    lines = [
        f"soak on {p['broker']}: {p['clients']} clients, {p['rooms']} rooms "
        f"(mean {rates['mean_room_size']} members), {p['minutes']:g} min",
        f"  rates/s: broadcasts {rates['broadcasts']}, deliveries {rates['deliveries']}, "
        f"asks {rates['asks']}, joins {rates['joins']}, leaves {rates['leaves']}",
        f"  broker killed at {t['broker_killed']:.1f} s, back at {t['broker_back']:.1f} s; "
        f"recovery {results['recovery']['recovery_s']} s after that: instances reconnected "
        f"{results['recovery']['instances_reconnected_s']}, first cross-instance delivery "
        f"{results['recovery']['first_cross_delivery_s']}, no loss from "
        f"{results['recovery']['loss_free_from_s']}, who exact from "
        f"{results['recovery']['who_exact_from_s']} (s after the broker was back)",
        f"  broadcasts: {b['sent']:,} sent, {b['expected_deliveries']:,} expected deliveries, "
        f"{b['received_expected']:,} of them received; duplicates {b['duplicates']}, "
        f"unexpected {b['unexpected']}, unknown {b['unknown']}, wrong room {b['wrong_room']}",
        f"  LOST OUTSIDE THE OUTAGE: {b['lost_outside_outage']}",
    ]
    for phase, counts in b["by_phase"].items():
        lines.append(
            f"    {phase:9} same {counts.get('lost_same', 0)} of {counts.get('expected_same', 0)}"
            f", cross {counts.get('lost_cross', 0)} of {counts.get('expected_cross', 0)}"
        )
    latency = results["latency_ms"]
    lines.append(f"  broadcast latency p50/p99/max: {_ms(latency['overall'])}")
    lines.append(f"    outside the outage window:   {_ms(latency['outside_outage'])}")
    for row in latency["per_minute"]:
        lines.append(
            f"    minute {row['minute']:2}: {_ms(row)}, lost {row['lost']} of {row['expected']};"
            f" CPU ours {row.get('cpu_ours_cores')}, others {row.get('cpu_others_cores')} cores"
        )
    for kind, stats in results["asks"]["by_kind"].items():
        lines.append(
            f"  ask {kind:7}: {stats['asked']} asked, failed {stats['failed_outside_outage']} "
            f"outside / {stats['failed_in_outage']} in the outage; {_ms(stats['latency_ms'])}"
        )
    who = results["asks"]["who_answers_checked"]
    lines.append(
        f"  who answers checked against the joins and leaves: "
        f"{who.get('outside_outage', 0)} outside the outage, "
        f"{who.get('inexact_outside_outage', 0)} inexact; {who.get('in_outage', 0)} in it, "
        f"{who.get('inexact_in_outage', 0)} inexact"
    )
    for change in ("joins", "leaves"):
        c = results[change]
        lines.append(
            f"  {change}: {c['done']} ({c['during_run']} during the run), failed "
            f"{c['failed_outside_outage']} outside / {c['failed_in_outage']} in the outage; "
            f"{_ms(c['latency_ms'])}"
        )
    errors = results["client_errors"]
    lines.append(
        "  client errors: "
        + (
            ", ".join(
                f"{what}: {e['count']} ({e['outside_outage']} outside the outage)"
                for what, e in errors.items()
            )
            or "none"
        )
    )
    for name, log in results["server_logs"].items():
        issues = [
            f"{e['count']}× {e['example'][:120]} {e['phases']}" for e in log["warnings_and_errors"]
        ]
        traces = [f"{e['count']}× {e['example'][:120]} {e['phases']}" for e in log["tracebacks"]]
        lines.append(
            f"  server {name.upper()}: ws {log['websocket_events']}, disconnects during the "
            f"run {log['ws_disconnects_before_clients_closed']}; {len(traces)} kinds of "
            f"traceback; {len(issues)} kinds of warning/error"
        )
        lines += [f"    traceback {x}" for x in traces[:8]]
        lines += [f"    {x}" for x in issues[:12]]
    for name in PROCESSES:
        r = results["rss_mb"][name]
        lines.append(
            f"  RSS {LABELS[name]:12}: start {r['at_start']}, 1 min {r['at_1_min']}, before the "
            f"outage {r['before_outage']}, end {r['at_end']}, max {r['max']} MB; trend "
            f"{r['trend_before_outage_mb_per_min']} MB/min before the outage, "
            f"{r['trend_after_outage_mb_per_min']} after"
        )
    lags = [n.get("loop_lag_max_ms") for n in results["node"]]
    lines.append(f"  Node event-loop lag, max per process: {lags} ms")
    return "\n".join(lines)
