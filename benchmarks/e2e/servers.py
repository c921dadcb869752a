"""Server processes of one run: two ASGI instances, and a sampler of their memory.

Each instance is its own OS process — ``python -m daphne`` or ``python -m uvicorn`` (one worker,
``websockets-sansio``, lifespan off) — serving one of the apps in apps.py on a free port.
Both servers run with their defaults otherwise (uvicorn negotiates permessage-deflate when the
client offers it, as the ``ws`` package and browsers do; daphne does not).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]


def server_command(server: str, app: str, port: int) -> list[str]:
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    if server == "uvicorn":
        return [
            *[sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)],
            *["--log-level", "warning", "--ws", "websockets-sansio", "--lifespan", "off"],
        ]
    raise ValueError(f"unknown server {server!r}")


class Instance:
    """One server process on 127.0.0.1:``port``, its output in ``log_path``."""

    def __init__(self, server: str, app: str, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.log_path = log
        env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                server_command(server, app, port),
                cwd=REPO,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server on port {self.port} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nothing listened on port {self.port} within {timeout}s")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RssSampler:
    """Samples the resident memory of some processes every ``interval`` s, in a thread."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.idle = [self._rss(p) for p in self.processes]
        self.peak = list(self.idle)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(process: psutil.Process) -> int:
        try:
            return int(process.memory_info().rss)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for index, process in enumerate(self.processes):
                self.peak[index] = max(self.peak[index], self._rss(process))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
