"""The clients' asks, joins, leaves and errors, counted in the outage window and outside it.

An ask, join or leave is *in the outage* when the span from its request to its answer (or
failure) overlaps the outage window (:meth:`benchmarks.soak.outage.Phases.in_window`); an error
when its time falls in it. Latency: answer time - request time at the asking client, in ms.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .logs import ClientLogs, Exchange
from .outage import Phases
from .report import percentiles

#: At most this many examples of each kind of failure are kept in the results.
ASK_FAILURE_EXAMPLES = 40
WHO_INEXACT_EXAMPLES = 20
CHANGE_FAILURE_EXAMPLES = 10
CLIENT_ERROR_EXAMPLES = 5

Verdicts = list[tuple[list[int], list[int]]]  # (missing, extra) of each who answer


def ask_summary(logs: ClientLogs, verdicts: Verdicts, phases: Phases) -> dict[str, Any]:
    """The results' ``asks``: by kind, by minute, the first failures, and the ``who`` answers
    checked against the joins and leaves."""
    who_checked, who_inexact = check_who_answers(logs, verdicts, phases)
    return {
        "by_kind": asks_by_kind(logs.asks, phases),
        "per_minute": asks_per_minute(logs.asks),
        "failure_examples": ask_failures(logs.asks, phases),
        "who_answers_checked": who_checked,
        "who_inexact_examples": who_inexact,
    }


def asks_by_kind(asks: list[Exchange], phases: Phases) -> dict[str, Any]:
    """Per kind of ask: how many, how many failed in the outage window (their span overlaps it)
    or outside it, and the latency of those answered, all and outside the window."""
    by_kind: dict[str, Any] = {}
    for kind in sorted({a[1] for a in asks}):
        done = [a for a in asks if a[1] == kind]
        failed = [a for a in done if not a[4]]
        by_kind[kind] = {
            "asked": len(done),
            "failed_outside_outage": sum(not phases.in_window(a[2], a[3]) for a in failed),
            "failed_in_outage": sum(phases.in_window(a[2], a[3]) for a in failed),
            "latency_ms": percentiles([(a[3] - a[2]) * 1000 for a in done if a[4]]),
            "latency_ms_outside_outage": percentiles(
                [(a[3] - a[2]) * 1000 for a in done if a[4] and not phases.in_window(a[2], a[3])]
            ),
        }
    return by_kind


def asks_per_minute(asks: list[Exchange]) -> list[dict[str, Any]]:
    """Per minute of the request with an answered ask: failures and the answers' latency."""
    latency_by_minute: dict[int, list[float]] = defaultdict(list)
    for _, _, asked, answered, ok, _ in asks:
        if ok:
            latency_by_minute[int(asked // 60)].append((answered - asked) * 1000)
    failed_by_minute = Counter(int(a[2] // 60) for a in asks if not a[4])
    return [
        {"minute": minute, "failed": failed_by_minute[minute], **percentiles(values)}
        for minute, values in sorted(latency_by_minute.items())
    ]


def ask_failures(asks: list[Exchange], phases: Phases) -> list[dict[str, Any]]:
    """The first failed asks, each marked in the outage window or not."""
    return [
        {
            "client": client,
            "kind": kind,
            "asked": round(asked, 3),
            "answered": round(answered, 3),
            "in_outage": phases.in_window(asked, answered),
            "error": error,
        }
        for client, kind, asked, answered, ok, error in asks
        if not ok
    ][:ASK_FAILURE_EXAMPLES]


def check_who_answers(
    logs: ClientLogs, verdicts: Verdicts, phases: Phases
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """How many ``who`` answers were checked in the outage window and outside it, and how many
    of those were inexact (``inexact_in_outage``, ...); and the first inexact ones."""
    checked: Counter[str] = Counter()
    inexact: list[dict[str, Any]] = []
    for (asker, asked, answered, room, _), (missing, extra) in zip(logs.who, verdicts, strict=True):
        window = "in_outage" if phases.in_window(asked, answered) else "outside_outage"
        checked[window] += 1
        if missing or extra:
            checked[f"inexact_{window}"] += 1
            if len(inexact) < WHO_INEXACT_EXAMPLES:
                inexact.append(
                    {
                        "asker": asker,
                        "room": room,
                        "asked": round(asked, 3),
                        "answered": round(answered, 3),
                        "in_outage": window == "in_outage",
                        "missing": missing,
                        "extra": extra,
                    }
                )
    return dict(checked), inexact


def membership_changes(changes: list[Exchange], phases: Phases) -> dict[str, Any]:
    """Joins or leaves: how many, how many during the run (not the initial joins, before
    ``t = 0``), failures in the outage window and outside it, and the latency of those done
    during the run, all and outside the window."""
    during = [c for c in changes if c[2] >= 0]
    failed = [c for c in changes if not c[4]]
    return {
        "done": len(changes),
        "during_run": len(during),
        "failed_outside_outage": sum(not phases.in_window(c[2], c[3]) for c in failed),
        "failed_in_outage": sum(phases.in_window(c[2], c[3]) for c in failed),
        "failure_examples": [
            {"client": c[0], "room": c[1], "asked": round(c[2], 3), "error": c[5]}
            for c in failed[:CHANGE_FAILURE_EXAMPLES]
        ],
        "latency_ms": percentiles([(c[3] - c[2]) * 1000 for c in during if c[4]]),
        "latency_ms_outside_outage": percentiles(
            [(c[3] - c[2]) * 1000 for c in during if c[4] and not phases.in_window(c[2], c[3])]
        ),
    }


def client_errors(errors: list[tuple[int, float, str, str]], phases: Phases) -> dict[str, Any]:
    """The clients' errors by what happened: how many, in the outage window or outside it, and
    the first few."""
    by_what: dict[str, Any] = {}
    for client, t, what, detail in errors:
        entry = by_what.setdefault(
            what, {"count": 0, "in_outage": 0, "outside_outage": 0, "examples": []}
        )
        entry["count"] += 1
        entry["in_outage" if phases.in_window(t, t) else "outside_outage"] += 1
        if len(entry["examples"]) < CLIENT_ERROR_EXAMPLES:
            entry["examples"].append({"client": client, "t": round(t, 3), "detail": detail})
    return by_what
