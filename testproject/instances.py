"""Starting testproject instances (daphne or uvicorn processes), for the demo and the e2e tests.

An instance started with ``die_with_parent=True`` is SIGKILLed by the kernel when the thread that
started it exits (Linux ``PR_SET_PDEATHSIG``; a no-op elsewhere): the demo's children go with it
even when it is SIGKILLed itself and can clean nothing up. The e2e tests leave it off: the death
signal follows the starting *thread*, not the process, which a fixture run from a worker thread
would trip over.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def killed_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the calling thread exits.

    Linux only (``None`` elsewhere). ``prctl`` is looked up here, in the parent: the child only
    calls it between ``fork`` and ``exec``. If the parent died before the call took effect, the
    child has been reparented already and exits at once instead of outliving it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)

    return set_death_signal


def start_instance(
    name: str,
    port: int,
    env: dict[str, str],
    output: IO[bytes] | None = None,
    server: str = "daphne",
    *,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``server`` (daphne or uvicorn) serving testproject on 127.0.0.1:``port``.

    The process is the server itself (no reloader, no workers), so its pid is the instance's.
    ``die_with_parent``: see the module docstring.
    """
    return subprocess.Popen(
        server_command(server, port),
        cwd=HERE,
        env={**env, "INSTANCE_NAME": name},
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        preexec_fn=killed_with_parent() if die_with_parent else None,
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
