"""Two daphne instances of testproject sharing one broker, for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels_neffos.testing.brokers import BrokerProcess, free_port
from channels_neffos.testing.conformance import unique_prefix

REPO = Path(__file__).resolve().parents[2]
TESTPROJECT = REPO / "testproject"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: the end-to-end tests run the real neffos.js client")
    if not (TESTPROJECT / "node_modules" / "neffos.js").is_dir():
        pytest.fail("testproject's npm packages are missing: run `npm ci` in testproject/")
    return found


class Instance:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"daphne-{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "testproject.asgi:application",
                ],
                cwd=TESTPROJECT,
                env={**env, "INSTANCE_NAME": name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daphne did not listen in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=["nats", "redis", "multi"])
def two_instances(
    request: pytest.FixtureRequest,
    redis_server: BrokerProcess,
    nats_server: BrokerProcess,
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """Instances A and B of testproject on one broker (or on both, via the bridge)."""
    env = {
        **os.environ,
        "CHANNEL_LAYER": request.param,
        "NATS_URL": nats_server.url,
        "REDIS_URL": redis_server.url,
        "CHANNEL_PREFIX": unique_prefix(),
        "PYTHONPATH": os.pathsep.join([str(TESTPROJECT), str(REPO)]),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
    }
    instances = [Instance(name, env, tmp_path) for name in ("A", "B")]
    try:
        for instance in instances:
            instance.wait_ready()
        yield instances[0].url, instances[1].url
    finally:
        for instance in instances:
            instance.stop()
        for instance in instances:
            log = instance.log_path.read_text(errors="replace")
            if "Traceback" in log:
                print(f"--- {instance.log_path.name}\n{log[-4000:]}")
