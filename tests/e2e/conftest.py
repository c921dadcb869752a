"""Two instances of testproject sharing one broker, for the end-to-end tests.

* ``two_instances`` — two daphne instances on NATS, Redis or both (the bridge): their URLs.
* ``two_instances_on`` — two :class:`Instance` objects on a chosen (broker, server), passed as an
  indirect parameter, e.g. ``@pytest.mark.parametrize("two_instances_on", [("nats",
  "uvicorn")], indirect=True)``; ``("nats", "daphne")`` without one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from channels_neffos.testing.brokers import BrokerProcess, free_port
from channels_neffos.testing.conformance import unique_prefix

REPO = Path(__file__).resolve().parents[2]
TESTPROJECT = REPO / "testproject"
sys.path.insert(0, str(TESTPROJECT))

import instances  # noqa: E402  (testproject/instances.py)

Results = dict[str, dict[str, object]]


def node_results(script: str, run: subprocess.CompletedProcess[str]) -> Results:
    """The checks a harness.mjs scenario printed; fail with every failed check's detail."""
    try:
        results: Results = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"{script} printed no results:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    failed = {name: r["detail"] for name, r in results.items() if not r["ok"]}
    assert not failed, json.dumps(failed, indent=2)
    assert run.returncode == 0, run.stderr
    return results


def run_node_steps(script: str, *args: str, on_step: Callable[[str], str | None]) -> Results:
    """Run a testproject/e2e scenario that prints ``STEP <name>`` when it wants something done
    (a fault, a command) and reads one line from stdin once it is: ``on_step(name)`` does it
    and may return that line (default ``done``).
    Returns its checks (see :func:`node_results`); the scenario's own watchdog bounds its time."""
    with tempfile.TemporaryFile("w+") as errors:
        scenario = subprocess.Popen(
            [node(), f"e2e/{script}", *args],
            cwd=TESTPROJECT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert scenario.stdin is not None and scenario.stdout is not None
        output: list[str] = []
        try:
            for line in scenario.stdout:
                output.append(line)
                if line.startswith("STEP "):
                    reply = on_step(line.split()[1])
                    scenario.stdin.write(f"{reply or 'done'}\n")
                    scenario.stdin.flush()
            scenario.wait(timeout=30)
        finally:
            if scenario.poll() is None:
                scenario.kill()
                scenario.wait()
        errors.seek(0)
        run = subprocess.CompletedProcess(
            scenario.args, scenario.returncode, "".join(output), errors.read()
        )
    return node_results(script, run)


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: the end-to-end tests run the real neffos.js client")
    if not (TESTPROJECT / "node_modules" / "neffos.js").is_dir():
        pytest.fail("testproject's npm packages are missing: run `npm ci` in testproject/")
    return found


class Instance:
    """One testproject server process; ``log_path`` holds what it printed."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, server: str, port: int | None = None
    ) -> None:
        self.name = name
        self.server = server
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{server}-{name}.log"
        #: The environment it runs in (broker URLs, CHANNEL_PREFIX...), e.g. for manage.py.
        self.env = env
        with open(self.log_path, "wb") as log:
            self.process = instances.start_instance(name, self.port, env, log, server=server)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``manage.py`` of testproject with this instance's environment (broker, prefix)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=TESTPROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def restart(self) -> None:
        """A new process of this instance, on the same port (after the old one exited)."""
        with open(self.log_path, "ab") as log:
            self.process = instances.start_instance(
                self.name, self.port, self.env, log, server=self.server
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        try:
            instances.wait_listening(self.port, self.process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log()[-3000:]}") from None


@contextmanager
def running_instances(
    broker: str, server: str, urls: dict[str, str], log_dir: Path
) -> Iterator[list[Instance]]:
    """Instances A and B of testproject under ``server`` on ``broker`` (nats, redis, multi).

    Each knows both (``CHAT_PEERS``): the chat page reconnects to the other if its own dies."""
    ports = [free_port(), free_port()]
    env = instances.instance_environment(
        {
            **os.environ,
            "CHANNEL_LAYER": broker,
            "CHANNEL_PREFIX": unique_prefix(),
            "CHAT_PEERS": ",".join(f"ws://127.0.0.1:{port}" for port in ports),
            **urls,
        }
    )
    running = [
        Instance(name, env, log_dir, server, port)
        for name, port in zip(("A", "B"), ports, strict=True)
    ]
    try:
        for instance in running:
            instance.wait_ready()
        yield running
    finally:
        for instance in running:
            instances.stop(instance.process)
        for instance in running:
            log = instance.log()
            if "Traceback" in log:
                print(f"--- {instance.log_path.name}\n{log[-4000:]}")


@pytest.fixture(params=["nats", "redis", "multi"])
def two_instances(
    request: pytest.FixtureRequest,
    redis_server: BrokerProcess,
    nats_server: BrokerProcess,
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    """Daphne instances A and B of testproject on one broker (or on both, via the bridge)."""
    urls = {"NATS_URL": nats_server.url, "REDIS_URL": redis_server.url}
    with running_instances(request.param, "daphne", urls, tmp_path) as running:
        yield running[0].url, running[1].url


@pytest.fixture
def two_instances_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Instance]]:
    """Instances A and B on the indirect parameter ``(broker, server)``; only its brokers start."""
    broker, server = getattr(request, "param", ("nats", "daphne"))
    if server not in instances.SERVERS:
        raise ValueError(f"unknown server {server!r}")
    urls = {}
    if broker in ("nats", "multi"):
        urls["NATS_URL"] = request.getfixturevalue("nats_server").url
    if broker in ("redis", "multi"):
        urls["REDIS_URL"] = request.getfixturevalue("redis_server").url
    with running_instances(broker, server, urls, tmp_path) as running:
        yield running
