"""Starting testproject instances (daphne or uvicorn processes), for the demo and the e2e tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def instance_environment(base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what an instance needs to import testproject and channels_neffos."""
    return {
        **base,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), base.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
    }


#: The ASGI servers an instance can run under.
SERVERS = ("daphne", "uvicorn")


def server_command(server: str, port: int) -> list[str]:
    """The command line serving testproject on 127.0.0.1:``port`` with ``server``."""
    application = "testproject.asgi:application"
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application]
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            application,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "info",
        ]
    raise ValueError(f"server must be one of {SERVERS}, not {server!r}")


def start_instance(
    name: str,
    port: int,
    env: dict[str, str],
    output: IO[bytes] | None = None,
    server: str = "daphne",
) -> subprocess.Popen[bytes]:
    """Start ``server`` (daphne or uvicorn) serving testproject on 127.0.0.1:``port``.

    The process is the server itself (no reloader, no workers), so its pid is the instance's.
    """
    return subprocess.Popen(
        server_command(server, port),
        cwd=HERE,
        env={**env, "INSTANCE_NAME": name},
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the instance on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
