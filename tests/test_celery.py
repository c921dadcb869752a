"""The layer from a real Celery worker (prefork and threads pools), as a Django app uses it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from channels_neffos.testing.brokers import BrokerProcess
from channels_neffos.testing.conformance import LayerSpec, eventually

REPO = Path(__file__).resolve().parents[1]
TASKS = "tests.celery_tasks"
#: Lines a clean worker never logs: failed tasks, and asyncio's complaints at loop close.
TROUBLE = ("Traceback", "was destroyed but it is pending", "Unclosed", "never awaited")


@pytest.fixture(params=["prefork", "threads"])
def worker(
    request: pytest.FixtureRequest, spec: LayerSpec, redis_server: BrokerProcess, tmp_path: Path
) -> Iterator[tuple[Celery, Path]]:
    """A Celery worker (2 children or threads) on a private Redis db; a client app for it."""
    broker = f"{redis_server.url}/{secrets.randbelow(8) + 8}"
    env = {
        **os.environ,
        "LAYER_BACKEND": spec.backend,
        "LAYER_CONFIG": json.dumps(spec.config),
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
        "PYTHONWARNINGS": "default",  # let the worker log every ResourceWarning
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", TASKS, "worker", "--pool", request.param]
    command += ["--concurrency", "2", "--loglevel", "INFO", "--without-gossip"]
    command += ["--without-mingle", "--without-heartbeat"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    client = Celery("client", broker=broker, backend=broker)
    try:
        yield client, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        client.close()


@pytest.mark.asyncio
async def test_tasks_reach_consumers_and_ask_them(
    spec: LayerSpec, worker: tuple[Celery, Path]
) -> None:
    client, log_path = worker
    layer = spec.build()
    channel = await layer.new_channel()
    group = "celery-" + secrets.token_hex(4)
    await layer.group_add(group, channel)

    for n in range(20):
        client.send_task(f"{TASKS}.notify", args=[group, n])
    try:
        done = [await asyncio.wait_for(layer.receive(channel), 60) for _ in range(20)]
    except asyncio.TimeoutError:
        pytest.fail(f"the worker's group_sends did not arrive:\n{log_path.read_text()[-3000:]}")
    assert sorted(message["n"] for message in done) == list(range(20))

    async def answer_questions() -> None:
        while True:
            question = await layer.receive(channel)
            await layer.reply(question, {"echo": question["n"]})

    responder = asyncio.ensure_future(answer_questions())
    try:
        asks = [client.send_task(f"{TASKS}.ask", args=[channel, n]) for n in range(10)]
        answers: list[Any] = [await asyncio.to_thread(a.get, timeout=30) for a in asks]
    finally:
        responder.cancel()
        await asyncio.gather(responder, return_exceptions=True)
    assert answers == [{"echo": n} for n in range(10)]
    await layer.close()

    # The worker logs "succeeded" after the task's result is stored, so the last line may
    # still be on its way when the last answer is here: wait for it (the log is really read).
    await eventually(
        lambda: log_path.read_text().count("succeeded") >= 30, 10, "30 tasks logged as succeeded"
    )
    log = log_path.read_text()
    assert not [line for line in log.splitlines() if any(t in line for t in TROUBLE)], log[-3000:]
