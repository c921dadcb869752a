"""Targets, tables and plots of one end-to-end run; every ratio pairs numbers of that run.

Targets, per server (daphne, uvicorn), for each of our namespaces subjects (Redis, NATS):

* burst deliveries/s ≥ 0.5 x the raw ASGI app's on the same server;
* burst deliveries/s ≥ 5 x the best plain-Channels peer's (channels_redis pubsub, channels_redis
  core, channels-nats — not our own layers) on the same server;
* paced p99 latency ≤ 20 ms (at half the burst's sustainable rate);
* zero loss in the burst.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .subjects import NS_NATS, NS_REDIS, RAW, SERVERS, SUBJECTS

Results = dict[str, dict[str, dict[str, Any]]]  # subject name -> server -> run


def _get(run: dict[str, Any] | None, phase: str, key: str) -> Any:
    return ((run or {}).get(phase) or {}).get(key)


def deliveries(results: Results, subject: str, server: str) -> float | None:
    value = _get(results.get(subject, {}).get(server), "burst", "deliveries_per_s")
    return float(value) if value else None


def targets(results: Results) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(server: str, subject: str, target: str, value: Any, goal: str, holds: Any) -> None:
        rows.append(
            {"server": server, "subject": subject, "target": target, "measured": value}
            | {"goal": goal, "holds": None if value is None else bool(holds)}
        )

    for server in SERVERS:
        raw = deliveries(results, RAW, server)
        peers = {s.name: deliveries(results, s.name, server) for s in SUBJECTS if s.peer}
        measured_peers = {name: value for name, value in peers.items() if value}
        best = max(measured_peers, key=measured_peers.__getitem__, default=None)
        for subject in (NS_REDIS, NS_NATS):
            run = results.get(subject, {}).get(server)
            ours = deliveries(results, subject, server)
            ratio = ours / raw if ours and raw else None
            row(server, subject, "deliveries/s vs raw ASGI", ratio, "≥ 0.5×", (ratio or 0) >= 0.5)
            ratio = ours / measured_peers[best] if ours and best else None
            row(
                server,
                subject,
                f"deliveries/s vs best plain-Channels peer ({best or 'none measured'})",
                ratio,
                "≥ 5×",
                (ratio or 0) >= 5,
            )
            p99 = _get(run, "paced", "p99_ms")
            row(server, subject, "paced p99 latency, ms", p99, "≤ 20", (p99 or 0) <= 20)
            loss = _get(run, "burst", "loss")
            row(server, subject, "burst loss (messages)", loss, "0", loss == 0)
    return rows


def target_table_rst(rows: list[dict[str, Any]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines += [f"   {'*' if i == 0 else ' '} - {h}" for i, h in enumerate(_TARGET_HEADER)]
    for entry in rows:
        value = entry["measured"]
        measured = (
            "n/a" if value is None else (f"{value:.2f}" if isinstance(value, float) else value)
        )
        holds = {True: "yes", False: "**no**", None: "n/a"}[entry["holds"]]
        cells = [entry["server"], entry["subject"], entry["target"], measured, entry["goal"], holds]
        lines += [f"   {'*' if i == 0 else ' '} - {cell}" for i, cell in enumerate(cells)]
    return "\n".join(lines) + "\n"


_TARGET_HEADER = ["server", "subject", "target", "measured", "goal", "holds"]
_SUMMARY_HEADER = [
    "subject",
    "server",
    "deliveries/s",
    "burst lost",
    "late",
    "dupes",
    "order",
    "burst ended",
    "burst p50 / p99 ms",
    "paced msg/s",
    "paced p50 / p99 ms",
    "paced lost",
    "peak RSS MB (a, b)",
]


def _latency(phase: dict[str, Any]) -> str:
    if phase.get("p50_ms") is None:
        return "n/a"
    return f"{phase['p50_ms']:.1f} / {phase['p99_ms']:.1f}"


def _lost(phase: dict[str, Any]) -> str:
    if not phase.get("expected"):
        return "n/a"
    return (
        f"{phase['loss']} of {phase['expected']} ({100 * phase['loss'] / phase['expected']:.0f}%)"
    )


def summary_rows(results: Results) -> list[list[str]]:
    """One row of numbers per subject x server, as text (errors in the last column)."""
    rows = []
    for subject, by_server in results.items():
        for server, run in by_server.items():
            burst, paced = run.get("burst") or {}, run.get("paced") or {}
            rss = run.get("rss_peak_mb")
            cells = [
                subject,
                server,
                f"{burst['deliveries_per_s']:,.0f}" if burst else "n/a",
                _lost(burst),
                str(burst.get("late", "n/a")),
                str(burst.get("duplicates", "n/a")),
                str(burst.get("order_violations", "n/a")),
                str(burst.get("ended", "n/a")),
                _latency(burst),
                f"{paced['rate_msgs_per_s']:,.0f}" if paced else "n/a",
                _latency(paced),
                _lost(paced),
                ", ".join(f"{v:.0f}" for v in rss) if rss else "n/a",
            ]
            if run.get("error"):
                cells[-1] += f" -- ERROR: {run['error'][:160]}"
            rows.append(cells)
    return rows


def notes(results: Results, sizes: dict[str, Any]) -> list[str]:
    """Why runs lost messages, as far as the clients and the servers' logs tell."""
    found = []
    for subject, by_server in results.items():
        for server, run in by_server.items():
            burst, paced = run.get("burst") or {}, run.get("paced") or {}
            where = f"{subject} on {server}"
            if run.get("error"):
                found.append(f"{where}: failed: {run['error'][:300]}")
            if burst.get("loss"):
                ended = str(burst.get("ended"))
                why = {
                    "time limit": f"still delivering when the burst was cut at "
                    f"{sizes['burst_limit']:.0f} s; {burst.get('late', 0)} deliveries came later",
                    "idle": f"nothing more arrived for {sizes['idle_seconds']:.0f} s",
                }.get(ended, ended)
                found.append(f"{where}: lost {_lost(burst)} in the burst: {why}.")
            if run.get("drop_log_lines"):
                found.append(
                    f"{where}: the servers logged {run['drop_log_lines']} lines about dropped "
                    f"messages, e.g. {run.get('drop_log_sample', '')!r}."
                )
            if burst and not burst.get("drained", True):
                found.append(
                    f"{where}: late burst deliveries were still coming after "
                    f"{sizes['drain_limit']:.0f} s: the paced phase ran behind that backlog."
                )
            if paced.get("loss"):
                found.append(f"{where}: lost {_lost(paced)} in the paced phase.")
            for exception, count in (run.get("server_exceptions") or {}).items():
                found.append(f"{where}: server exception x{count}: {exception}")
    return found


def summary_rst(results: Results, remarks: list[str]) -> str:
    """The numbers of every run as a list-table, then ``remarks`` (see :func:`notes`)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [_SUMMARY_HEADER, *summary_rows(results)]:
        lines += [f"   {'*' if i == 0 else ' '} - {cell}" for i, cell in enumerate(row)]
    if remarks:
        lines += ["", *(f"* {remark}" for remark in remarks)]
    return "\n".join(lines) + "\n"


def summary_text(results: Results) -> str:
    rows = [_SUMMARY_HEADER, *summary_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_SUMMARY_HEADER))]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


def plot(results: Results, out: Path) -> list[Path]:
    """deliveries.png (burst deliveries/s, loss marked) and latency.png (burst and paced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = list(results)
    width = 0.8 / len(SERVERS)
    written = []

    fig, ax = plt.subplots(figsize=(11, 5))
    for offset, server in enumerate(SERVERS):
        xs = [i + (offset - 0.5) * width for i in range(len(subjects))]
        values = [deliveries(results, s, server) or 0 for s in subjects]
        bars = ax.bar(xs, values, width, label=server)
        for bar, subject in zip(bars, subjects, strict=True):
            burst = (results[subject].get(server) or {}).get("burst") or {}
            if burst.get("expected"):
                lost = 100 * burst["loss"] / burst["expected"]
                label = f"lost {lost:.0f}%" if burst["loss"] else "no loss"
                ax.annotate(
                    label,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height() or 1),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
    _label_axes(ax, subjects, "deliveries/s (burst, log scale)")
    ax.set_ylim(top=ax.get_ylim()[1] * 4)  # room for the loss labels
    ax.set_title("Burst: deliveries per second at the clients (2 instances, one room)")
    written.append(_save(fig, out / "deliveries.png"))

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, phase in zip(axes, ("burst", "paced"), strict=True):
        for offset, server in enumerate(SERVERS):
            for shift, key, alpha in ((-0.25, "p50_ms", 1.0), (0.25, "p99_ms", 0.55)):
                xs = [i + (offset - 0.5) * width + shift * width for i in range(len(subjects))]
                values = [_get(results[s].get(server), phase, key) or 0 for s in subjects]
                label = f"{server} {key[:3]}"
                ax.bar(xs, values, width / 2, label=label, alpha=alpha, color=f"C{offset}")
        if phase == "paced":
            ax.axhline(20, color="red", linestyle="--", linewidth=1, label="20 ms target")
        _label_axes(ax, subjects, f"{phase} latency, ms (log scale)")
        ax.set_title(f"{phase}: send → receive latency p50 / p99")
    written.append(_save(fig, out / "latency.png"))
    return written


def _label_axes(ax: Any, subjects: list[str], ylabel: str) -> None:
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(len(subjects)))
    ax.set_xticklabels(subjects, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
