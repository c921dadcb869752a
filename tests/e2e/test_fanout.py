"""Process-level fan-out end to end: real Node clients, two real server instances, real brokers.

Functional tests, not benchmarks: they print durations and memory (``-s``) but assert only what
must hold — no loss, no duplicates, per-sender order; a client that stops reading is let go
(4013) while the others get everything, with bounded memory; a connection cut without a close
frame leaves its rooms. The Node side is in testproject/e2e (burst.mjs, slow.mjs, cut.mjs).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request

import psutil
import pytest

from .conftest import TESTPROJECT, Instance, node, node_results
from .test_neffos_js import run_scenario


def run_node(script: str, *args: str, timeout: float = 120) -> dict[str, dict[str, object]]:
    started = time.monotonic()
    run = subprocess.run(
        [node(), f"e2e/{script}", *args],
        cwd=TESTPROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    results = node_results(script, run)
    print(f"{script}: {time.monotonic() - started:.1f} s")
    for name, result in results.items():
        print(f"  {name}: {json.dumps(result['detail'])[:400]}")
    return results


def urls(pair: list[Instance]) -> tuple[str, str]:
    return pair[0].url, pair[1].url


@pytest.mark.parametrize(
    "two_instances_on", [("nats", "uvicorn")], indirect=True, ids=["nats-uvicorn"]
)
def test_the_chat_under_uvicorn(two_instances_on: list[Instance]) -> None:
    """Under uvicorn too: the page, the whole neffos.js chat scenario of test_neffos_js, and the
    plain WebSocket relay."""
    for instance in two_instances_on:
        with urllib.request.urlopen(instance.url + "/", timeout=10) as page:
            assert b"channels_neffos chat" in page.read()
    assert len(run_scenario("scenario.mjs", urls(two_instances_on))) >= 16
    assert len(run_scenario("native.mjs", urls(two_instances_on))) >= 5


@pytest.mark.parametrize(
    "two_instances_on",
    [("nats", "daphne"), ("redis", "daphne"), ("nats", "uvicorn")],
    indirect=True,
    ids=["nats-daphne", "redis-daphne", "nats-uvicorn"],
)
def test_burst_of_200_clients_loses_nothing(two_instances_on: list[Instance]) -> None:
    """200 clients (100 per instance) in one room each emit 10 messages at once: every client
    gets the other 1,990 exactly once, in order per sender; nobody is closed as slow."""
    results = run_node("burst.mjs", *urls(two_instances_on), "100", "10", timeout=100)
    assert results["every client receives the burst"]["detail"]["receivedMin"] == 1990
    for instance in two_instances_on:
        assert "code 4013" not in instance.log(), instance.log()[-3000:]


#: The flood the slow-client test sends through one room: 60 MB in 8 KB chat messages (about
#: 1,100 messages/s get through the chat handler of one instance, so 1 KB messages would take
#: a minute). The slow client's connection may hold at most 1 MiB in the server's buffer
#: (NeffosConsumer.max_buffered_bytes), a few MB more wait in kernel socket buffers.
FLOOD_MB = 60
FLOOD_MESSAGE_BYTES = 8000
#: How much the slow client's instance may grow while the flood goes by. Measured: under 1 MB
#: with the bound working; 55-57 MB when the server buffers the slow client without bound.
MAX_RSS_GROWTH = 25 * 1024 * 1024
SLOW_CLIENT_WARNING = "slow client(s) closed with code 4013"


class RssSampler:
    """Samples a process's resident set size every 20 ms, in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(0.02)

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    def peak(self, start: float, end: float) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    "two_instances_on",
    [("nats", "daphne"), ("nats", "uvicorn")],
    indirect=True,
    ids=["nats-daphne", "nats-uvicorn"],
)
def test_a_client_that_stops_reading_is_let_go_and_memory_stays_bounded(
    two_instances_on: list[Instance],
) -> None:
    """One client in a room stops reading (its TCP socket paused) while a sender floods the room
    with 60 MB: the fast clients get everything; the slow client's instance logs the 4013
    close, lets go of it (the room is told it left) and its connection ends; and the instance's
    RSS grows by far less than the flood (it would grow by ~55 MB buffering it all)."""
    slow_instance, other = two_instances_on  # slow.mjs puts the slow client on A
    sampler = RssSampler(slow_instance.pid)
    started = time.monotonic()
    marks: dict[str, float] = {}
    rss_at_flood = 0
    lines: list[str] = []
    process = subprocess.Popen(
        [node(), "e2e/slow.mjs", *urls(two_instances_on), str(FLOOD_MB), str(FLOOD_MESSAGE_BYTES)],
        cwd=TESTPROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # slow.mjs exits within 60 s (its own watchdog)
            lines.append(line)
            if line.startswith('{"phase"'):
                phase = json.loads(line)["phase"]
                marks[phase] = time.monotonic()
                if phase == "flood":
                    rss_at_flood = sampler.now()
        stderr = process.stderr.read() if process.stderr else ""
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sampler.stop()
    elapsed = time.monotonic() - started

    end = marks.get("resume", time.monotonic())
    peak = sampler.peak(marks.get("flood", end), end)
    growth = peak - rss_at_flood
    slow_log, other_log = slow_instance.log(), other.log()
    measured = (
        f"slow.mjs: {elapsed:.1f} s; RSS of the slow client's instance: {rss_at_flood / 2**20:.1f}"
        f" MiB when the flood started, peak {peak / 2**20:.1f} MiB before the slow client read"
        f" again: growth {growth / 2**20:.1f} MiB for a {FLOOD_MB} MB flood"
        f" (limit {MAX_RSS_GROWTH / 2**20:.0f} MiB)"
    )
    print(measured)

    problems = []
    run = subprocess.CompletedProcess(process.args, process.returncode, "".join(lines), stderr)
    try:
        results = node_results("slow.mjs", run)
    except AssertionError as failed:
        problems.append(f"slow.mjs checks failed: {failed}")
    else:
        for name, result in results.items():
            print(f"  {name}: {json.dumps(result['detail'])[:400]}")
    if "flood" not in marks:
        problems.append("the flood never started")
    elif growth >= MAX_RSS_GROWTH:
        problems.append(f"the instance buffered the slow client: {measured}")
    if SLOW_CLIENT_WARNING not in slow_log:
        problems.append(f"instance A never logged {SLOW_CLIENT_WARNING!r}:\n{slow_log[-3000:]}")
    if SLOW_CLIENT_WARNING in other_log:
        problems.append(f"instance B has no slow client, yet:\n{other_log[-3000:]}")
    assert not problems, "\n\n".join([measured, *problems])


@pytest.mark.parametrize(
    "two_instances_on",
    [("nats", "daphne"), ("redis", "daphne"), ("nats", "uvicorn")],
    indirect=True,
    ids=["nats-daphne", "redis-daphne", "nats-uvicorn"],
)
def test_a_connection_cut_without_a_close_frame_leaves_its_rooms(
    two_instances_on: list[Instance],
) -> None:
    """A client's TCP socket destroyed (FIN) or reset (RST) with no WebSocket close frame: the
    room on both instances is told it left, "who" no longer lists it, the room still works."""
    run_node("cut.mjs", *urls(two_instances_on), timeout=60)
