"""Reading a soak run's raw material: the clients' logs and the servers' output.

The clients' logs are JSON lines written by ``clients.mjs`` (their format is described at its
top), with epoch milliseconds; the servers' output is what daphne and testproject print under
:mod:`benchmarks.soak.settings` (``<UTC time> <LEVEL> <logger> <message>`` lines, tracebacks,
daphne's access log). Every time returned here is in seconds since the clients started their
activity (``start``, epoch seconds): the run's ``t = 0``. Nothing is judged here.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INF = math.inf

# -- the clients' logs ---------------------------------------------------------------------------


@dataclass
class Membership:
    """One stay of a client in a room: from its join request to its leave (if any)."""

    client: int
    room: str
    join_requested: float
    join_acked: float  # INF: the join failed (the client may or may not be a member)
    leave_requested: float = INF
    leave_acked: float = INF  # INF: never left, or the leave failed


#: An ask, join or leave: (client, kind or room, request time, answer time, ok, error).
Exchange = tuple[int, str, float, float, bool, str]


@dataclass
class ClientLogs:
    """Everything the clients logged, merged over the Node processes."""

    instance_of: dict[int, int]  # client → its instance (0: A, 1: B)
    memberships: dict[str, list[Membership]]  # room → every stay in it, in log order
    sends: dict[int, tuple[int, str, float]]  # message id → (sender, room, time)
    receipts: list[tuple[int, int, str, float]]  # (message id, receiver, room, time)
    asks: list[Exchange]
    joins: list[Exchange]
    leaves: list[Exchange]
    errors: list[tuple[int, float, str, str]]  # (client, time, what, detail)
    # answered ``who`` asks: (asker, request time, reply time, room, the clients named)
    who: list[tuple[int, float, float, str, set[int]]]


def read_client_logs(paths: Iterable[str], start: float) -> ClientLogs:
    """The clients' JSON-lines logs at ``paths``, with times relative to ``start``."""
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


# -- the servers' output -------------------------------------------------------------------------

_TIMED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(.*)$"
)
_ACCESS = re.compile(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d)\] \"(WS\w+) ")
_CHAINED = ("The above exception", "During handling of the above exception")


def log_time(stamp: str) -> float:
    """Epoch seconds of a log line's time (the soak's settings: TIME_ZONE = "UTC")."""
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def normalized(text: str) -> str:
    """A log message with its numbers and ids blurred, to count repeats of one kind."""
    text = re.sub(r"[0-9a-f]{8,}", "…", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)[:200]


def reconnected_after(path: Path, start: float, killed: float) -> float | None:
    """When the instance logged its last "reconnected" within two minutes after the kill."""
    last = None
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            timed = _TIMED.match(line)
            if timed and "reconnected to" in timed[3]:
                t = log_time(timed[1]) - start
                if killed <= t <= killed + 120:
                    last = t
    return last


def read_server_log(
    path: Path, start: float, phase: Callable[[float | None], str], closing: float
) -> dict[str, Any]:
    """Warnings, errors and tracebacks of one instance's output, by kind and phase; WS events.

    ``phase`` names the phase of a line's time (None: no timed line seen yet). A chain of
    tracebacks ("The above exception was the direct cause ...") counts once, under its last
    exception, in the phase of the timed line before it. WebSocket disconnects in daphne's access
    log (whole seconds) count as "during the run" before the second the clients close in
    (``closing``, relative to ``start``).
    """
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
                normalized(last_exception),
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
            last_time = log_time(timed[1]) - start
            if timed[2] in ("WARNING", "ERROR", "CRITICAL"):
                key = f"{timed[2]} {normalized(timed[3])}"
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
