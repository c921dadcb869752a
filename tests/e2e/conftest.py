"""Two daphne instances of testproject sharing one broker, for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels_neffos.testing.brokers import BrokerProcess, free_port
from channels_neffos.testing.conformance import unique_prefix

REPO = Path(__file__).resolve().parents[2]
TESTPROJECT = REPO / "testproject"
sys.path.insert(0, str(TESTPROJECT))

import instances  # noqa: E402  (testproject/instances.py)


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
            self.process = instances.start_instance(name, self.port, env, log)

    def wait_ready(self) -> None:
        try:
            instances.wait_listening(self.port, self.process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_path.read_text()[-3000:]}") from None


@pytest.fixture(params=["nats", "redis", "multi"])
def two_instances(
    request: pytest.FixtureRequest,
    redis_server: BrokerProcess,
    nats_server: BrokerProcess,
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """Instances A and B of testproject on one broker (or on both, via the bridge)."""
    env = instances.instance_environment(
        {
            **os.environ,
            "CHANNEL_LAYER": request.param,
            "NATS_URL": nats_server.url,
            "REDIS_URL": redis_server.url,
            "CHANNEL_PREFIX": unique_prefix(),
        }
    )
    running = [Instance(name, env, tmp_path) for name in ("A", "B")]
    try:
        for instance in running:
            instance.wait_ready()
        yield running[0].url, running[1].url
    finally:
        for instance in running:
            instances.stop(instance.process)
        for instance in running:
            log = instance.log_path.read_text(errors="replace")
            if "Traceback" in log:
                print(f"--- {instance.log_path.name}\n{log[-4000:]}")
