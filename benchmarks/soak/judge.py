"""Judging a soak run (see :mod:`benchmarks.soak`): the clients' logs, the servers' output, RSS.

Every time here is in seconds since the clients started their activity (``t = 0``), on the
machine's one clock (the Node processes log epoch milliseconds, the driver epoch seconds).

:func:`judge` puts together the rules, each in a function of its own:

* who should receive each broadcast, which deliveries are tolerated or unexpected, and whom a
  ``who`` answer must name: :mod:`benchmarks.soak.expected`;
* the outage window, the recovery after it and the phases of the run:
  :mod:`benchmarks.soak.outage`;
* here, what is counted by phase and by minute: losses (:func:`losses_by_phase`), latency
  (:func:`broadcast_latency`), the servers' log lines (:func:`server_log_phase`);
* asks, joins and leaves (failures in the outage window or outside it), ``who`` answers exact or
  not, client errors: :mod:`benchmarks.soak.asks`.

**Latency** is receive time - send time of each delivery, by the minute of the send, for every
delivery (expected or tolerated); asks: reply time - request time at the asking client.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import expected as oracle
from .asks import Verdicts, ask_summary, client_errors, membership_changes
from .expected import Delivery, Received
from .logs import ClientLogs, read_client_logs, read_server_log, reconnected_after
from .outage import (
    PHASES,
    Phases,
    Recovery,
    cross_loss_free_from,
    first_cross_delivery,
    who_exact_from,
)
from .report import cpu_by_minute, percentiles, plot_bins, rss_summary

#: Server log lines this long after the outage window are its aftermath: the longest timeout
#: of something started during the outage (the client's ask timeout).
AFTERMATH_S = 10.0
#: At most this many examples of losses outside the outage window, and of unexpected
#: deliveries, are kept in the results.
LOST_EXAMPLES = 50
UNEXPECTED_EXAMPLES = 10


def judge(parameters: dict[str, Any], happened: dict[str, Any]) -> dict[str, Any]:
    """The results of a run: ``parameters`` and what ``happened`` as the driver kept them."""
    start = happened["timeline"]["start"]
    times = {name: round(t - start, 3) for name, t in happened["timeline"].items()}
    logs = read_client_logs(happened["client_logs"], start)
    closed_at = oracle.websocket_closes(logs.errors)
    receipts = oracle.sort_receipts(logs.sends, logs.receipts)
    received = receipts.received
    expected = oracle.expected_deliveries(logs, closed_at, received)
    expected_keys = {(d.message, d.receiver) for d in expected}
    others = oracle.sort_unexpected(logs, received, expected_keys)
    verdicts = oracle.judge_who_answers(logs, closed_at)
    recovery = measure_recovery(logs, received, expected, verdicts, happened, times)
    recovered = recovery.recovered
    phases = Phases(times["broker_killed"], times["broker_back"], recovered)
    server_phase = server_log_phase(phases, times["clients_closing"])
    return {
        "parameters": parameters,
        "timeline_s": {**times, "outage_window_start": phases.start, "recovered": recovered},
        "measured_rates_per_s": measured_rates(logs, received, parameters["minutes"] * 60),
        "broadcasts": broadcast_counts(
            logs.sends, receipts, expected, expected_keys, others, phases
        ),
        "latency_ms": broadcast_latency(
            logs.sends, received, expected, phases, cpu_by_minute(happened["samples"], start)
        ),
        "recovery": recovery.since(times["broker_back"]),
        "asks": ask_summary(logs, verdicts, phases),
        "joins": membership_changes(logs.joins, phases),
        "leaves": membership_changes(logs.leaves, phases),
        "client_errors": client_errors(logs.errors, phases),
        "server_logs": {
            name: read_server_log(Path(path), start, server_phase, times["clients_closing"])
            for name, path in happened["server_logs"].items()
        },
        "node": happened["node_done"],
        "rss_mb": rss_summary(happened["samples"], start, times, phases),
        "plot_bins": plot_bins(expected, received, logs.sends),
    }


def measure_recovery(
    logs: ClientLogs,
    received: Received,
    expected: list[Delivery],
    verdicts: Verdicts,
    happened: dict[str, Any],
    times: dict[str, float],
) -> Recovery:
    """The recovery moments (see :mod:`benchmarks.soak.outage`) of the run: from the servers'
    logs (their reconnections after the kill), the deliveries and the ``who`` answers."""
    start, back = happened["timeline"]["start"], times["broker_back"]
    return Recovery(
        reconnected={
            name: reconnected_after(Path(path), start, times["broker_killed"])
            for name, path in happened["server_logs"].items()
        },
        first_delivery=first_cross_delivery(received, logs.sends, logs.instance_of, back),
        loss_free=cross_loss_free_from(expected, received, back),
        who_exact=who_exact_from(logs.who, verdicts, back),
    )


def broadcast_counts(
    sends: dict[int, tuple[int, str, float]],
    receipts: oracle.Receipts,
    expected: list[Delivery],
    expected_keys: set[tuple[int, int]],
    others: oracle.Unexpected,
    phases: Phases,
) -> dict[str, Any]:
    """The results' ``broadcasts``: sends, expected deliveries and how many of them arrived,
    every delivery, the tolerated and unexpected ones, duplicates, unknown and wrong-room
    receipts, the losses by phase, and the losses outside the outage window, which should not
    happen."""
    loss, lost_examples = losses_by_phase(expected, receipts.received, sends, phases)
    return {
        "sent": len(sends),
        "expected_deliveries": len(expected),
        "received_expected": sum(k in receipts.received for k in expected_keys),
        "received_total": len(receipts.received),
        "tolerated": others.tolerated,
        "duplicates": receipts.duplicates,
        "unexpected": len(others.unexpected),
        "unexpected_examples": others.unexpected[:UNEXPECTED_EXAMPLES],
        "unknown": receipts.unknown,
        "wrong_room": receipts.wrong_room,
        "by_phase": {phase: dict(loss[phase]) for phase in PHASES},
        "lost_outside_outage": sum(
            loss[p]["lost_same"] + loss[p]["lost_cross"] for p in ("before", "after")
        ),
        "lost_outside_outage_examples": lost_examples,
    }


def losses_by_phase(
    expected: list[Delivery],
    received: Received,
    sends: dict[int, tuple[int, str, float]],
    phases: Phases,
) -> tuple[dict[str, Counter[str]], list[dict[str, Any]]]:
    """Expected and lost deliveries (``expected_same``, ``lost_cross``, ...) per phase of their
    send time, by route (to the sender's instance or the other one); and the first losses
    before or after the outage window, the ones that should not happen."""
    loss: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    examples: list[dict[str, Any]] = []
    for message, receiver, src, dst, sent_at in expected:
        phase = phases.of(sent_at)
        route = "same" if src == dst else "cross"
        loss[phase][f"expected_{route}"] += 1
        if (message, receiver) not in received:
            loss[phase][f"lost_{route}"] += 1
            if phase in ("before", "after") and len(examples) < LOST_EXAMPLES:
                examples.append(
                    {
                        "message": message,
                        "sender": sends[message][0],
                        "receiver": receiver,
                        "room": sends[message][1],
                        "sent": round(sent_at, 3),
                        "route": route,
                    }
                )
    return loss, examples


def broadcast_latency(
    sends: dict[int, tuple[int, str, float]],
    received: Received,
    expected: list[Delivery],
    phases: Phases,
    cpu: dict[int, dict[str, float]],
) -> dict[str, Any]:
    """Latency (ms) of every delivery, expected or tolerated: overall, of the sends before or
    after the outage window, and per minute of the send with that minute's sends, expected and
    lost deliveries and CPU use (``cpu``, by minute)."""
    latencies_by_minute: dict[int, list[float]] = defaultdict(list)
    outside: list[float] = []
    everything: list[float] = []
    for (message, _), t in received.items():
        sent_at = sends[message][2]
        latency = (t - sent_at) * 1000
        latencies_by_minute[int(sent_at // 60)].append(latency)
        everything.append(latency)
        if phases.of(sent_at) in ("before", "after"):
            outside.append(latency)
    expected_by_minute: Counter[int] = Counter()
    lost_by_minute: Counter[int] = Counter()
    for message, receiver, _, _, sent_at in expected:
        expected_by_minute[int(sent_at // 60)] += 1
        if (message, receiver) not in received:
            lost_by_minute[int(sent_at // 60)] += 1
    sends_by_minute = Counter(int(s[2] // 60) for s in sends.values())
    minutes = sorted(set(latencies_by_minute) | set(expected_by_minute))
    return {
        "overall": percentiles(everything),
        "outside_outage": percentiles(outside),
        "per_minute": [
            {
                "minute": minute,
                "sent": sends_by_minute[minute],
                "expected": expected_by_minute[minute],
                "lost": lost_by_minute[minute],
                **percentiles(latencies_by_minute[minute]),
                **cpu.get(minute, {}),
            }
            for minute in minutes
        ],
    }


def server_log_phase(phases: Phases, closing: float) -> Callable[[float | None], str]:
    """The phase of a server log line by its time: ``unknown`` (no time yet), ``shutdown`` (from
    the moment the clients close on), ``in_outage``, ``aftermath`` (up to ``AFTERMATH_S`` after
    the window: what was started during the outage and times out later) or ``outside_outage``.
    """

    def phase(t: float | None) -> str:
        if t is None:
            return "unknown"
        if t >= closing:
            return "shutdown"
        if phases.in_window(t, t):
            return "in_outage"
        if phases.end < t <= phases.end + AFTERMATH_S:
            return "aftermath"
        return "outside_outage"

    return phase


def measured_rates(logs: ClientLogs, received: Received, duration: float) -> dict[str, float]:
    """Broadcasts, deliveries, asks, joins and leaves per second over the run's ``duration``
    (those started in it; every delivery), and the mean room size at its middle."""
    sends_in_run = [s for s in logs.sends.values() if 0 <= s[2] < duration]
    return {
        "broadcasts": round(len(sends_in_run) / duration, 1),
        "deliveries": round(len(received) / duration, 1),
        "asks": round(sum(0 <= a[2] < duration for a in logs.asks) / duration, 1),
        "joins": round(sum(0 <= j[2] < duration for j in logs.joins) / duration, 1),
        "leaves": round(sum(0 <= j[2] < duration for j in logs.leaves) / duration, 1),
        "mean_room_size": mean_room_size(logs, duration),
    }


def mean_room_size(logs: ClientLogs, duration: float) -> float:
    """The mean number of (acknowledged) members per room, at the middle of the run."""
    middle = duration / 2
    sizes = [
        sum(m.join_acked <= middle < m.leave_requested for m in members)
        for members in logs.memberships.values()
    ]
    return round(sum(sizes) / max(1, len(sizes)), 1)
