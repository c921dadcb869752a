"""Workloads that need OS processes: (d) fan-out across processes and (f) memory.

(d) Members are spread over 4 OS processes; the publisher is this (a fifth) process. Each
message carries its send time, and members record how long it took to reach them.

(f) Each layer runs alone in a fresh process, which reports its RSS: before, after creating
10,000 channels in 1,000 groups, and after 1,000,000 group_add/group_discard operations on them
(time-boxed for layers whose every membership change is a broker round trip).

Entry point for the child processes: ``python -m benchmarks.processes member|memory <json>``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from channels_neffos.testing.conformance import LayerSpec

from .workloads import MESSAGE, percentiles

MEMBER_PROCESSES = 4


# -- (d) fan-out across OS processes -----------------------------------------------------------


async def _member(args: dict[str, Any]) -> None:
    layer = LayerSpec(**args["spec"]).build()
    channels = [await layer.new_channel() for _ in range(args["members"])]
    for channel in channels:
        await layer.group_add(args["group"], channel)
    Path(args["ready"]).touch()
    latencies: list[float] = []
    last = 0.0

    async def drain(channel: str) -> None:
        nonlocal last
        for _ in range(args["messages"]):
            message = await layer.receive(channel)
            last = time.time()
            latencies.append((last - message["sent_at"]) * 1000)

    await asyncio.wait_for(asyncio.gather(*(drain(c) for c in channels)), args["timeout"])
    Path(args["result"]).write_text(json.dumps({"latencies_ms": latencies, "last": last}))
    close = getattr(layer, "close", None)
    if close is not None:
        await close()


async def fan_out_across_processes(
    spec: LayerSpec, members: int, deliveries: int, timeout: float = 120
) -> dict[str, float]:
    processes = min(MEMBER_PROCESSES, members)
    per_process = [members // processes + (i < members % processes) for i in range(processes)]
    messages = max(5, deliveries // members)
    group = f"xfan{members}"
    workdir = Path(tempfile.mkdtemp(prefix="neffos-bench-"))
    children = []
    for index, count in enumerate(per_process):
        args = {
            "spec": {"backend": spec.backend, "config": spec.config},
            "group": group,
            "members": count,
            "messages": messages,
            "ready": str(workdir / f"ready-{index}"),
            "result": str(workdir / f"result-{index}.json"),
            "timeout": timeout,
        }
        children.append(_spawn("member", args))
    publisher = spec.build()
    try:
        deadline = time.monotonic() + 60
        while not all((workdir / f"ready-{i}").exists() for i in range(processes)):
            if time.monotonic() > deadline or any(c.poll() not in (None, 0) for c in children):
                raise RuntimeError(f"member processes did not start: {_errors(children)}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        started = time.time()
        for _ in range(messages):
            await publisher.group_send(group, {**MESSAGE, "sent_at": time.time()})
        for child in children:
            await asyncio.get_running_loop().run_in_executor(None, child.wait, timeout + 10)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        close = getattr(publisher, "close", None)
        if close is not None:
            await close()
    results = []
    for index in range(processes):
        result_file = workdir / f"result-{index}.json"
        if not result_file.exists():
            raise RuntimeError(f"a member process failed: {_errors(children)}")
        results.append(json.loads(result_file.read_text()))
    latencies = [latency for result in results for latency in result["latencies_ms"]]
    finished = max(result["last"] for result in results)
    return {
        "deliveries_per_s": len(latencies) / (finished - started),
        **percentiles(latencies),
    }


def _spawn(role: str, args: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.processes", role, json.dumps(args)],
        stderr=subprocess.PIPE,
    )


def _errors(children: list[subprocess.Popen[bytes]]) -> str:
    messages = []
    for child in children:
        if child.poll() is not None and child.returncode != 0 and child.stderr is not None:
            messages.append(child.stderr.read().decode(errors="replace")[-2000:])
    return "\n".join(messages) or "(no error output)"


# -- (f) memory --------------------------------------------------------------------------------


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def _memory(args: dict[str, Any]) -> None:
    layer = LayerSpec(**args["spec"]).build()
    warm = await layer.new_channel()  # connections open: measure what channels and groups cost
    await layer.group_add("warm", warm)
    base = _rss()
    channels = [await layer.new_channel() for _ in range(args["channels"])]
    groups = [f"g{index}" for index in range(args["groups"])]
    for index, channel in enumerate(channels):
        await layer.group_add(groups[index % len(groups)], channel)
    after_setup = _rss()
    churner = await layer.new_channel()
    operations = 0
    deadline = time.monotonic() + args["churn_seconds"]
    while operations < args["churn_ops"] and time.monotonic() < deadline:
        for group in groups[:100]:
            await layer.group_add(group, churner)
            await layer.group_discard(group, churner)
        operations += 200
    after_churn = _rss()
    Path(args["result"]).write_text(
        json.dumps(
            {
                "base_mb": base / 2**20,
                "setup_mb": (after_setup - base) / 2**20,
                "after_churn_mb": (after_churn - base) / 2**20,
                "churn_growth_pct": 100 * (after_churn - after_setup) / after_setup,
                "churn_ops": operations,
            }
        )
    )


async def memory_footprint(
    spec: LayerSpec, channels: int, groups: int, churn_ops: int, churn_seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        result = Path(workdir) / "memory.json"
        args = {
            "spec": {"backend": spec.backend, "config": spec.config},
            "channels": channels,
            "groups": groups,
            "churn_ops": churn_ops,
            "churn_seconds": churn_seconds,
            "result": str(result),
        }
        child = _spawn("memory", args)
        await asyncio.get_running_loop().run_in_executor(None, child.wait, churn_seconds + 300)
        if child.returncode != 0 or not result.exists():
            raise RuntimeError(f"the memory benchmark failed: {_errors([child])}")
        return json.loads(result.read_text())  # type: ignore[no-any-return]


if __name__ == "__main__":
    role, raw_args = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run(_member(raw_args) if role == "member" else _memory(raw_args))
