"""One run: a subject on a server — a private broker, two instances, the Node clients.

Everything started here is stopped in ``finally`` blocks, on success, failure and timeout alike.
A run that fails returns ``{"error": ...}`` plus whatever it measured before failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from channels_neffos.testing.brokers import BrokerProcess, NatsServer, RedisServer, free_port

from .servers import Instance, RssSampler
from .subjects import Subject

CLIENTS_SCRIPT = Path(__file__).resolve().parent / "clients.mjs"
MB = 2**20


@dataclass(frozen=True)
class Sizes:
    clients_per_instance: int
    messages: int  # per client, in the burst
    paced_seconds: float
    idle_seconds: float  # a phase ends when nothing arrived for this long
    burst_limit: float  # the longest a burst may take
    drain_limit: float  # the longest to wait for late burst deliveries before the paced phase
    run_limit: float  # the hard limit of the Node process (connect + burst + paced)
    settle_seconds: float = 0.5  # between the last join and the first send
    paced_fraction: float = 0.5


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise RuntimeError("node is not on PATH: the clients are Node (ws, neffos.js)")
    return found


def run_case(subject: Subject, server: str, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Measure ``subject`` on ``server``; never raises for a failed measurement."""
    result: dict[str, Any] = {"subject": subject.name, "server": server}
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            broker_url = ""
            if subject.broker is not None:
                broker: BrokerProcess = RedisServer() if subject.broker == "redis" else NatsServer()
                stack.enter_context(broker)
                broker_url = broker.url
            _serve_and_measure(subject, server, sizes, workdir, broker_url, result)
    except Exception as exc:
        result.setdefault("error", f"{type(exc).__name__}: {exc}")
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _serve_and_measure(
    subject: Subject,
    server: str,
    sizes: Sizes,
    workdir: Path,
    broker_url: str,
    result: dict[str, Any],
) -> None:
    env = _base_env()
    if subject.broker is not None:
        env["BENCH_E2E_LAYER"] = json.dumps(subject.layer(broker_url))
    instances: list[Instance] = []
    started = time.perf_counter()
    try:
        for name in ("a", "b"):
            log = workdir / f"{subject.key}-{server}-{name}.log"
            instances.append(Instance(server, subject.app, free_port(), env, log))
        for instance in instances:
            instance.wait_listening(timeout=30)
        result["startup_s"] = time.perf_counter() - started
        with RssSampler([i.process.pid for i in instances]) as rss:
            cpu_before = [_cpu_seconds(i) for i in instances]
            phases = _run_clients(subject, sizes, [f"ws://127.0.0.1:{i.port}" for i in instances])
            result["clients_s"] = time.perf_counter() - started - result["startup_s"]
            result["server_cpu_s"] = [
                _cpu_seconds(i) - before for i, before in zip(instances, cpu_before, strict=True)
            ]
        exited = [i.process.returncode for i in instances if i.process.poll() is not None]
        if exited:
            phases.setdefault("error", f"a server exited during the run ({exited})")
        result["rss_idle_mb"] = [value / MB for value in rss.idle]
        result["rss_peak_mb"] = [value / MB for value in rss.peak]
        result.update(phases)
    finally:
        for instance in instances:
            instance.stop()
        logs = "\n".join(instance.log_tail(10**7) for instance in instances)
        exceptions = server_exceptions(logs)
        if exceptions:
            result["server_exceptions"] = exceptions
        drops = _drop_lines(logs)
        if drops:
            result["drop_log_lines"] = len(drops)
            result["drop_log_sample"] = drops[0][:300]


def _run_clients(subject: Subject, sizes: Sizes, urls: list[str]) -> dict[str, Any]:
    config = {
        "mode": subject.mode,
        "urls": urls,
        "perInstance": sizes.clients_per_instance,
        "messages": sizes.messages,
        "pacedFraction": sizes.paced_fraction,
        "pacedSeconds": sizes.paced_seconds,
        "connectMs": 30_000,
        "settleMs": sizes.settle_seconds * 1000,
        "idleMs": sizes.idle_seconds * 1000,
        "burstLimitMs": sizes.burst_limit * 1000,
        "drainLimitMs": sizes.drain_limit * 1000,
        "pacedLimitMs": (sizes.paced_seconds + 10 * sizes.idle_seconds) * 1000,
    }
    process = subprocess.Popen(
        [node(), str(CLIENTS_SCRIPT), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=sizes.run_limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    phases: dict[str, Any] = {}
    for line in stdout.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            phases[record.pop("phase")] = record
    if timed_out:
        phases["error"] = f"the clients did not finish within {sizes.run_limit:.0f}s"
    elif "error" in phases:
        phases["error"] = phases["error"]["error"]
    elif process.returncode != 0:
        phases["error"] = f"node exited with {process.returncode}: {stderr[-2000:]}"
    elif "burst" not in phases:
        phases["error"] = f"the clients reported no burst: {stdout[-500:]} {stderr[-2000:]}"
    return phases


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def _cpu_seconds(instance: Instance) -> float:
    try:
        times = psutil.Process(instance.process.pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def server_exceptions(log: str) -> dict[str, int]:
    """The last line of every traceback in the servers' output (teardown included), counted."""
    found: dict[str, int] = {}
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            for following in lines[index + 1 :]:
                if following and not following[0].isspace():
                    found[following[:200]] = found.get(following[:200], 0) + 1
                    break
    return found


def _drop_lines(log: str) -> list[str]:
    """Log lines where a layer says it dropped messages: rate-limited lines, not messages.

    Indented lines (traceback bodies) are not log messages and are skipped."""
    words = ("full", "dropped", "capacity")
    return [
        line
        for line in log.splitlines()
        if line[:1].strip() and any(word in line.lower() for word in words)
    ]
