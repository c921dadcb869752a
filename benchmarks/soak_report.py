"""Judging a soak run (see :mod:`benchmarks.soak`): the clients' logs, the servers' output, RSS.

Every time here is in seconds since the clients started their activity (``t = 0``), on the
machine's one clock (the Node processes log epoch milliseconds, the driver epoch seconds).

**Who should receive a broadcast.** A room's member on either instance, other than its sender,
whose join was acknowledged at least ``GUARD_S`` before the send and who did not ask to leave
(nor lose its WebSocket) until ``GUARD_S`` after it *and* after the message reached the other
members on its instance: that instance's hub writes a broadcast to all its members at once, so a
client still there then got it too, while in a latency spike a message may take longer than
``GUARD_S`` to come. A join or leave racing a broadcast may or may not see it, so those are not
counted either way; a delivery to a client that was not even asking to join yet, or had already
left, is *unexpected*. A join or leave that failed leaves the membership unknown: such a client
is never expected, and never unexpected.

**The outage window** runs from ``OUTAGE_LEAD_S`` before the broker is killed (messages then in
flight die with it) until *recovery*, the latest of: each instance logging that it reconnected;
for each direction (instance A → B, B → A), the first cross-instance delivery received after the
broker was back (nats-py sends what it buffered while disconnected then); for each direction,
the send time from which ``STABLE_S`` seconds of cross-instance deliveries all arrived; and the
ask time from which ``STABLE_S`` seconds of ``who`` answers were all exact (the processes
announce themselves to the restarted broker's registry again). Losses are reported by the send
time, in phases: ``before`` the window, ``outage`` (until the broker is back), ``recovery`` (until
recovery) and ``after``. Losses before and after are the ones that should not happen. If the
flow never comes back, the window ends when the broker was back, and every later loss counts as
"after".

**Latency** is receive time - send time of each delivery, by the minute of the send, for every
delivery (expected or tolerated); asks: reply time - request time at the asking client.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A join must have been acknowledged this long before a send, and a leave requested this long
#: after it, for the client to be expected to receive it.
GUARD_S = 1.0
#: The outage window starts this long before the kill.
OUTAGE_LEAD_S = 1.0
INF = math.inf
PHASES = ("before", "outage", "recovery", "after")
#: Server log lines this long after the outage window are its aftermath: the longest timeout
#: of something started during the outage (the client's ask timeout).
AFTERMATH_S = 10.0


@dataclass
class Membership:
    client: int
    room: str
    join_requested: float
    join_acked: float  # INF: the join failed (the client may or may not be a member)
    leave_requested: float = INF
    leave_acked: float = INF  # INF: never left, or the leave failed


@dataclass
class ClientLogs:
    instance_of: dict[int, int]
    memberships: dict[str, list[Membership]]
    sends: dict[int, tuple[int, str, float]]  # message id → (sender, room, time)
    receipts: list[tuple[int, int, str, float]]  # (message id, receiver, room, time)
    asks: list[tuple[int, str, float, float, bool, str]]
    joins: list[tuple[int, str, float, float, bool, str]]
    leaves: list[tuple[int, str, float, float, bool, str]]
    errors: list[tuple[int, float, str, str]]
    # answered ``who`` asks: (asker, request time, reply time, room, the clients named)
    who: list[tuple[int, float, float, str, set[int]]]


def read_client_logs(paths: Iterable[str], start: float) -> ClientLogs:
    logs = ClientLogs({}, defaultdict(list), {}, [], [], [], [], [], [])
    current: dict[tuple[int, str], Membership] = {}

    def rel(ms: float) -> float:
        return ms / 1000 - start

    for path in paths:
        with open(path) as lines:
            for line in lines:
                kind, *f = json.loads(line)
                if kind == "r":
                    logs.receipts.append((f[0], f[1], f[2], rel(f[3])))
                elif kind == "s":
                    logs.sends[f[0]] = (f[1], f[2], rel(f[3]))
                elif kind == "a":
                    logs.asks.append((f[0], f[1], rel(f[2]), rel(f[3]), bool(f[4]), f[5]))
                    if f[1] == "who" and f[4]:
                        room, answer = f[6]
                        named = {int(name[1:]) for name in json.loads(answer)}
                        logs.who.append((f[0], rel(f[2]), rel(f[3]), room, named))
                elif kind in "jJ":
                    joined = kind == "j"
                    acked = rel(f[3]) if joined else INF
                    membership = Membership(f[0], f[1], rel(f[2]), acked)
                    logs.memberships[f[1]].append(membership)
                    current[(f[0], f[1])] = membership
                    error = "" if joined else f[4]
                    logs.joins.append((f[0], f[1], rel(f[2]), rel(f[3]), joined, error))
                elif kind in "lL":
                    left = kind == "l"
                    membership = current.pop((f[0], f[1]))
                    membership.leave_requested = rel(f[2])
                    membership.leave_acked = rel(f[3]) if left else INF
                    logs.leaves.append(
                        (f[0], f[1], rel(f[2]), rel(f[3]), left, "" if left else f[4])
                    )
                elif kind == "c":
                    logs.instance_of[f[0]] = f[1]
                elif kind == "x":
                    logs.errors.append((f[0], rel(f[1]), f[2], f[3]))
    return logs


def percentiles(values: list[float]) -> dict[str, float | int | None]:
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


class Phases:
    """Which phase of the run a time is in (see the module docstring)."""

    def __init__(self, killed: float, back: float, recovered: float | None) -> None:
        self.start = killed - OUTAGE_LEAD_S
        self.back = back
        self.end = recovered if recovered is not None else back

    def of(self, t: float) -> str:
        if t < self.start:
            return "before"
        if t < self.back:
            return "outage"
        if t < self.end:
            return "recovery"
        return "after"

    def in_window(self, t0: float, t1: float) -> bool:
        """Whether [t0, t1] overlaps the outage window."""
        return t0 < self.end and t1 >= self.start


def judge(parameters: dict[str, Any], happened: dict[str, Any]) -> dict[str, Any]:
    timeline = happened["timeline"]
    start = timeline["start"]
    times = {name: round(t - start, 3) for name, t in timeline.items()}
    logs = read_client_logs(happened["client_logs"], start)
    closed_at: dict[int, float] = {}
    for client, t, what, _ in logs.errors:
        if what == "websocket closed":
            closed_at.setdefault(client, t)

    # -- who should have received what -------------------------------------------------------
    received: dict[tuple[int, int], float] = {}
    duplicates = 0
    unknown = 0
    wrong_room = 0
    for message, receiver, room, t in logs.receipts:
        sent = logs.sends.get(message)
        if sent is None:
            unknown += 1
        elif sent[1] != room:
            wrong_room += 1
        elif (message, receiver) in received:
            duplicates += 1
        else:
            received[(message, receiver)] = t
    instance = logs.instance_of
    # When each message last reached a client of each instance: the instance's hub writes it to
    # all its members at once, so a client that asked to leave only after that still got it.
    arrived: dict[tuple[int, int], float] = {}
    for (message, receiver), t in received.items():
        key = (message, instance[receiver])
        arrived[key] = max(t, arrived.get(key, t))
    # (message, receiver, sender's instance, receiver's instance, send time)
    expected: list[tuple[int, int, int, int, float]] = []
    expected_keys: set[tuple[int, int]] = set()
    for message, (sender, room, sent_at) in logs.sends.items():
        for m in logs.memberships.get(room, ()):
            stayed_until = min(m.leave_requested, closed_at.get(m.client, INF))
            if (
                m.client != sender
                and m.join_acked <= sent_at - GUARD_S
                and stayed_until >= sent_at + GUARD_S
                and stayed_until > arrived.get((message, instance[m.client]), -INF)
            ):
                expected.append((message, m.client, instance[sender], instance[m.client], sent_at))
                expected_keys.add((message, m.client))
    by_client_room: dict[tuple[int, str], list[Membership]] = defaultdict(list)
    for room_members in logs.memberships.values():
        for m in room_members:
            by_client_room[(m.client, m.room)].append(m)
    unexpected: list[dict[str, Any]] = []
    tolerated = 0
    for (message, receiver), t in received.items():
        if (message, receiver) in expected_keys:
            continue
        sender, room, sent_at = logs.sends[message]
        member = any(
            m.join_requested <= t and m.leave_acked >= sent_at
            for m in by_client_room[(receiver, room)]
        )
        if member and receiver != sender:
            tolerated += 1
        else:
            unexpected.append(
                {"message": message, "receiver": receiver, "room": room, "sent": sent_at, "at": t}
            )

    # -- recovery: when cross-instance broadcasts flowed again -------------------------------
    killed, back = times["broker_killed"], times["broker_back"]
    directions = {0: "A→B", 1: "B→A"}
    # Flowing: the first cross-instance delivery received after the broker was back (of any
    # message: nats-py sends what it buffered while disconnected once it reconnects).
    first_delivery: dict[str, float | None] = {}
    for src, direction in directions.items():
        first_delivery[direction] = min(
            (
                t
                for (message, receiver), t in received.items()
                if t >= back
                and instance[logs.sends[message][0]] == src
                and instance[receiver] != src
            ),
            default=None,
        )
    # Loss-free: the send time, after the broker was back, from which every cross-instance
    # delivery of the next STABLE_S seconds arrived.
    loss_free: dict[str, float | None] = {}
    for src, direction in directions.items():
        cross = sorted(
            (sent_at, (message, receiver) in received)
            for message, receiver, s, d, sent_at in expected
            if s == src and d != src and sent_at >= back
        )
        loss_free[direction] = _loss_free_from(cross)
    reconnected = {
        name: _reconnected_after(Path(path), start, killed)
        for name, path in happened["server_logs"].items()
    }
    # who's answers: exact if they name everyone whose join was acknowledged before the ask and
    # who did not ask to leave before the answer, and no one who was not yet asking to join or
    # had already left (presence is exact once joins and leaves have returned: no guard time).
    who_judged: list[tuple[list[int], list[int]]] = []
    for _, asked, answered, room, named in logs.who:
        members = logs.memberships.get(room, [])
        must = {
            m.client
            for m in members
            if m.join_acked <= asked
            and m.leave_requested >= answered
            and closed_at.get(m.client, INF) >= answered
        }
        may = {m.client for m in members if m.join_requested <= answered and m.leave_acked >= asked}
        who_judged.append((sorted(must - named), sorted(named - may)))
    # Presence exact again: from the first who asked after the broker was back that starts
    # STABLE_S seconds of exact answers (the processes announce themselves again on reconnect).
    presence_exact = _loss_free_from(
        sorted(
            (asked, not (missing or extra))
            for (_, asked, _, _, _), (missing, extra) in zip(logs.who, who_judged, strict=True)
            if asked >= back
        )
    )
    moments = [
        *first_delivery.values(),
        *loss_free.values(),
        *reconnected.values(),
        presence_exact,
    ]
    recovered = None if None in moments else max(t for t in moments if t is not None)
    phases = Phases(killed, back, recovered)

    # -- losses by phase, latencies by minute ------------------------------------------------
    loss: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    lost_examples: list[dict[str, Any]] = []
    for message, receiver, src, dst, sent_at in expected:
        phase = phases.of(sent_at)
        route = "same" if src == dst else "cross"
        loss[phase][f"expected_{route}"] += 1
        if (message, receiver) not in received:
            loss[phase][f"lost_{route}"] += 1
            if phase in ("before", "after") and len(lost_examples) < 50:
                lost_examples.append(
                    {
                        "message": message,
                        "sender": logs.sends[message][0],
                        "receiver": receiver,
                        "room": logs.sends[message][1],
                        "sent": round(sent_at, 3),
                        "route": route,
                    }
                )
    latencies_by_minute: dict[int, list[float]] = defaultdict(list)
    outside: list[float] = []
    everything: list[float] = []
    for (message, _), t in received.items():
        sent_at = logs.sends[message][2]
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
    sends_by_minute = Counter(int(s[2] // 60) for s in logs.sends.values())

    cpu_by_minute = _cpu_by_minute(happened["samples"], start)
    minutes = sorted(set(latencies_by_minute) | set(expected_by_minute))
    per_minute = [
        {
            "minute": minute,
            "sent": sends_by_minute[minute],
            "expected": expected_by_minute[minute],
            "lost": lost_by_minute[minute],
            **percentiles(latencies_by_minute[minute]),
            **cpu_by_minute.get(minute, {}),
        }
        for minute in minutes
    ]

    # -- asks, joins and leaves --------------------------------------------------------------
    asks_by_kind: dict[str, Any] = {}
    ask_latency_by_minute: dict[int, list[float]] = defaultdict(list)
    ask_failures: list[dict[str, Any]] = []
    for kind in sorted({a[1] for a in logs.asks}):
        done = [a for a in logs.asks if a[1] == kind]
        failed = [a for a in done if not a[4]]
        asks_by_kind[kind] = {
            "asked": len(done),
            "failed_outside_outage": sum(not phases.in_window(a[2], a[3]) for a in failed),
            "failed_in_outage": sum(phases.in_window(a[2], a[3]) for a in failed),
            "latency_ms": percentiles([(a[3] - a[2]) * 1000 for a in done if a[4]]),
            "latency_ms_outside_outage": percentiles(
                [(a[3] - a[2]) * 1000 for a in done if a[4] and not phases.in_window(a[2], a[3])]
            ),
        }
    for client, kind, asked, answered, ok, error in logs.asks:
        if ok:
            ask_latency_by_minute[int(asked // 60)].append((answered - asked) * 1000)
        elif len(ask_failures) < 40:
            ask_failures.append(
                {
                    "client": client,
                    "kind": kind,
                    "asked": round(asked, 3),
                    "answered": round(answered, 3),
                    "in_outage": phases.in_window(asked, answered),
                    "error": error,
                }
            )
    who_checked: Counter[str] = Counter()
    who_inexact: list[dict[str, Any]] = []
    for (asker, asked, answered, room, _), (missing, extra) in zip(
        logs.who, who_judged, strict=True
    ):
        window = "in_outage" if phases.in_window(asked, answered) else "outside_outage"
        who_checked[window] += 1
        if missing or extra:
            who_checked[f"inexact_{window}"] += 1
            if len(who_inexact) < 20:
                who_inexact.append(
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
    asks_failed_by_minute = Counter(int(a[2] // 60) for a in logs.asks if not a[4])
    asks_per_minute = [
        {"minute": minute, "failed": asks_failed_by_minute[minute], **percentiles(values)}
        for minute, values in sorted(ask_latency_by_minute.items())
    ]

    def membership_changes(changes: list[tuple[int, str, float, float, bool, str]]) -> Any:
        during = [c for c in changes if c[2] >= 0]  # not the initial joins
        failed = [c for c in changes if not c[4]]
        return {
            "done": len(changes),
            "during_run": len(during),
            "failed_outside_outage": sum(not phases.in_window(c[2], c[3]) for c in failed),
            "failed_in_outage": sum(phases.in_window(c[2], c[3]) for c in failed),
            "failure_examples": [
                {"client": c[0], "room": c[1], "asked": round(c[2], 3), "error": c[5]}
                for c in failed[:10]
            ],
            "latency_ms": percentiles([(c[3] - c[2]) * 1000 for c in during if c[4]]),
            "latency_ms_outside_outage": percentiles(
                [(c[3] - c[2]) * 1000 for c in during if c[4] and not phases.in_window(c[2], c[3])]
            ),
        }

    # -- client-side errors ------------------------------------------------------------------
    client_errors: dict[str, Any] = {}
    for client, t, what, detail in logs.errors:
        entry = client_errors.setdefault(
            what, {"count": 0, "in_outage": 0, "outside_outage": 0, "examples": []}
        )
        entry["count"] += 1
        entry["in_outage" if phases.in_window(t, t) else "outside_outage"] += 1
        if len(entry["examples"]) < 5:
            entry["examples"].append({"client": client, "t": round(t, 3), "detail": detail})

    duration = parameters["minutes"] * 60
    sends_in_run = [s for s in logs.sends.values() if 0 <= s[2] < duration]
    results = {
        "parameters": parameters,
        "timeline_s": {**times, "outage_window_start": phases.start, "recovered": recovered},
        "measured_rates_per_s": {
            "broadcasts": round(len(sends_in_run) / duration, 1),
            "deliveries": round(len(received) / duration, 1),
            "asks": round(sum(0 <= a[2] < duration for a in logs.asks) / duration, 1),
            "joins": round(sum(0 <= j[2] < duration for j in logs.joins) / duration, 1),
            "leaves": round(sum(0 <= j[2] < duration for j in logs.leaves) / duration, 1),
            "mean_room_size": _mean_room_size(logs, duration),
        },
        "broadcasts": {
            "sent": len(logs.sends),
            "expected_deliveries": len(expected),
            "received_expected": sum(k in received for k in expected_keys),
            "received_total": len(received),
            "tolerated": tolerated,
            "duplicates": duplicates,
            "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:10],
            "unknown": unknown,
            "wrong_room": wrong_room,
            "by_phase": {phase: dict(loss[phase]) for phase in PHASES},
            "lost_outside_outage": sum(
                loss[p]["lost_same"] + loss[p]["lost_cross"] for p in ("before", "after")
            ),
            "lost_outside_outage_examples": lost_examples,
        },
        "latency_ms": {
            "overall": percentiles(everything),
            "outside_outage": percentiles(outside),
            "per_minute": per_minute,
        },
        "recovery": {
            "instances_reconnected_s": _since(back, reconnected),
            "first_cross_delivery_s": _since(back, first_delivery),
            "loss_free_from_s": _since(back, loss_free),
            "who_exact_from_s": _since(back, {"who": presence_exact})["who"],
            "recovery_s": None if recovered is None else round(recovered - back, 3),
        },
        "asks": {
            "by_kind": asks_by_kind,
            "per_minute": asks_per_minute,
            "failure_examples": ask_failures,
            "who_answers_checked": dict(who_checked),
            "who_inexact_examples": who_inexact,
        },
        "joins": membership_changes(logs.joins),
        "leaves": membership_changes(logs.leaves),
        "client_errors": client_errors,
        "server_logs": {
            name: read_server_log(Path(path), start, phases, times["clients_closing"])
            for name, path in happened["server_logs"].items()
        },
        "node": happened["node_done"],
        "rss_mb": rss_summary(happened["samples"], start, times, phases),
        "plot_bins": plot_bins(expected, received, logs.sends),
    }
    return results


def _cpu_by_minute(samples: list[dict[str, Any]], start: float) -> dict[int, dict[str, float]]:
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


#: Recovery: how long cross-instance deliveries must arrive without a loss.
STABLE_S = 10.0


def _loss_free_from(cross: list[tuple[float, bool]]) -> float | None:
    """The first send time that starts STABLE_S seconds (or the rest of the run) without loss.

    ``cross``: (send time, received) of the expected deliveries, in send-time order."""
    candidate = None
    for sent_at, ok in cross:
        if candidate is not None and sent_at > candidate + STABLE_S:
            return candidate
        if not ok:
            candidate = None
        elif candidate is None:
            candidate = sent_at
    return candidate


def _reconnected_after(path: Path, start: float, killed: float) -> float | None:
    """When the instance logged its last "reconnected" within two minutes after the kill."""
    last = None
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            timed = _TIMED.match(line)
            if timed and "reconnected to" in timed[3]:
                t = _log_time(timed[1]) - start
                if killed <= t <= killed + 120:
                    last = t
    return last


def _since(back: float, moments: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if t is None else round(t - back, 3) for name, t in moments.items()}


def _log_time(stamp: str) -> float:
    """Epoch seconds of a log line's time (soak_settings: TIME_ZONE = "UTC")."""
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def _mean_room_size(logs: ClientLogs, duration: float) -> float:
    """The mean number of (acknowledged) members per room, at the middle of the run."""
    middle = duration / 2
    sizes = [
        sum(m.join_acked <= middle < m.leave_requested for m in members)
        for members in logs.memberships.values()
    ]
    return round(sum(sizes) / max(1, len(sizes)), 1)


_TIMED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(.*)$"
)
_ACCESS = re.compile(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d)\] \"(WS\w+) ")


def _normalized(text: str) -> str:
    """A log message with its numbers and ids blurred, to count repeats of one kind."""
    text = re.sub(r"[0-9a-f]{8,}", "…", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)[:200]


_CHAINED = ("The above exception", "During handling of the above exception")


def read_server_log(path: Path, start: float, phases: Phases, closing: float) -> dict[str, Any]:
    """Warnings, errors and tracebacks of one instance's output, by kind and phase; WS events.

    A chain of tracebacks ("The above exception was the direct cause ...") counts once, under
    its last exception. Phases: ``in_outage``; ``aftermath``, up to ``AFTERMATH_S`` after it (what
    was started during the outage and times out later); ``outside_outage``; ``shutdown``, from
    the moment the clients close (``closing``) on.
    """

    def phase(t: float | None) -> str:
        if t is None:
            return "unknown"
        if t >= closing:
            return "shutdown"
        if phases.in_window(t, t):
            return "in_outage"
        if phases.end < t <= phases.end + AFTERMATH_S:
            return "aftermath"  # e.g. an ask sent during the outage timing out
        return "outside_outage"

    kinds: dict[str, dict[str, Any]] = {}
    tracebacks: dict[str, dict[str, Any]] = {}
    websocket: Counter[str] = Counter()
    disconnects_during_run = 0
    last_time: float | None = None
    # A traceback chain being read: None, "body" (frames) or "after" (past an exception line).
    state: str | None = None
    last_exception = ""

    def end_chain() -> None:
        nonlocal state
        if state is not None and last_exception:
            entry = tracebacks.setdefault(
                _normalized(last_exception),
                {"count": 0, "phases": Counter(), "example": last_exception[:500]},
            )
            entry["count"] += 1
            entry["phases"][phase(last_time)] += 1
        state = None

    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            if state is None:
                last_exception = ""
            state = "body"
            continue
        if state == "body":
            if line and not line[0].isspace():
                last_exception, state = line, "after"
            continue
        if state == "after":
            if not line.strip() or line.startswith(_CHAINED):
                continue
            end_chain()
        timed = _TIMED.match(line)
        if timed:
            last_time = _log_time(timed[1]) - start
            if timed[2] in ("WARNING", "ERROR", "CRITICAL"):
                key = f"{timed[2]} {_normalized(timed[3])}"
                entry = kinds.setdefault(
                    key, {"level": timed[2], "count": 0, "phases": Counter(), "example": timed[3]}
                )
                entry["count"] += 1
                entry["phases"][phase(last_time)] += 1
            continue
        access = _ACCESS.search(line)
        if access:
            websocket[access[2]] += 1
            stamp = datetime.datetime.strptime(access[1], "%d/%b/%Y:%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc
            )
            # The access log has whole seconds: a close in the second the clients closed in
            # counts as theirs.
            if access[2] == "WSDISCONNECT" and stamp.timestamp() < math.floor(start + closing):
                disconnects_during_run += 1
    end_chain()
    return {
        "warnings_and_errors": [
            {**entry, "phases": dict(entry["phases"])}
            for entry in sorted(kinds.values(), key=lambda e: -e["count"])
        ],
        "tracebacks": [
            {**entry, "phases": dict(entry["phases"])}
            for entry in sorted(tracebacks.values(), key=lambda e: -e["count"])
        ],
        "websocket_events": dict(websocket),
        "ws_disconnects_before_clients_closed": disconnects_during_run,
    }


PROCESSES = ("a", "b", "broker", "node")


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


# -- the plot and the printed summary ------------------------------------------------------------

LABELS = {"a": "daphne A", "b": "daphne B", "broker": "broker", "node": "Node clients"}


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


def plot_bins(
    logs_expected: list[tuple[int, int, int, int, float]],
    received: dict[tuple[int, int], float],
    sends: dict[int, tuple[int, str, float]],
    width: float = 10.0,
) -> list[dict[str, Any]]:
    """Per ``width`` seconds of send time: latency percentiles of deliveries, and losses."""
    latencies: dict[int, list[float]] = defaultdict(list)
    for (message, _), t in received.items():
        sent_at = sends[message][2]
        latencies[int(sent_at // width)].append((t - sent_at) * 1000)
    lost: dict[int, Counter[str]] = defaultdict(Counter)
    for message, receiver, src, dst, sent_at in logs_expected:
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
