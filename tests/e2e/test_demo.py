"""``scripts/demo`` leaves nothing behind, however it is stopped (testproject/run_demo.py says how).

Each case runs the real script in a session of its own, as a user would, and signals its main
process only, as a process manager does. "Nothing behind" is checked against what the demo
started, taken with psutil before the signal: every descendant gone (a zombie waiting for this
sandbox's init to reap it counts as gone: it holds no port) and none of their listening ports
accepting connections. Whatever happens, the demo's process group and every descendant seen are
SIGKILLed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from channels_neffos.testing.brokers import free_port

from .conftest import REPO

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
#: For the demo to print its URLs; the first run may also set up .venv and the npm packages.
STARTUP_TIMEOUT = 120.0
#: For everything to be gone after the signal; a clean stop takes about a second.
STOP_TIMEOUT = 20.0


def stop_signals_at_default() -> None:
    """In the demo's process, before exec: the stop signals as a terminal hands them over,
    whatever this test run inherited (``nohup`` ignores SIGHUP, and exec keeps that)."""
    for signo in STOP_SIGNALS:
        signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    log_path: Path
    port_a: int
    port_b: int
    #: What the demo started, with the TCP ports they listened on: taken before the signal.
    descendants: list[psutil.Process] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # of those still running
    listening_ports: set[int] = field(default_factory=set)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_urls(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "instance B: http://" not in self.output():
            if self.process.poll() is not None:
                pytest.fail(f"the demo exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo printed no URLs in {STARTUP_TIMEOUT}s:\n{self.output()}")
            time.sleep(0.05)

    def take_descendants(self) -> None:
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        for child in self.descendants:
            with suppress(psutil.NoSuchProcess):  # and its subclass ZombieProcess
                self.commands.append(" ".join(child.cmdline()))
                for connection in child.net_connections(kind="tcp"):
                    if connection.status == psutil.CONN_LISTEN:
                        self.listening_ports.add(connection.laddr.port)

    def assert_stopped_by(self, signo: int) -> None:
        """The demo exits by ``signo`` and nothing it started survives it."""
        try:
            returncode = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo still runs {STOP_TIMEOUT}s after {signo!r}:\n{self.output()}")
        assert returncode == -signo, self.output()
        deadline = time.monotonic() + STOP_TIMEOUT
        while (left := [child for child in self.descendants if alive(child)]) or (
            accepting := [port for port in self.listening_ports if accepts(port)]
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"left behind: {left or accepting}\n{self.output()}")
            time.sleep(0.05)

    def kill_everything(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its session's group: pgid == pid
        for child in self.descendants:
            with suppress(psutil.NoSuchProcess):
                child.kill()  # psutil checks the pid was not reused
        self.process.wait()


def alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def running_demo(tmp_path: Path, port_a: int | None = None) -> Iterator[Demo]:
    """``scripts/demo`` started on free ports (or ``port_a``) with its embedded nats-server."""
    port_a = port_a or free_port()
    port_b = free_port()
    log_path = tmp_path / "demo.log"
    drop = ("NATS_URL", "CHANNEL_LAYER", "PORT_A", "PORT_B")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(REPO / "scripts" / "demo"), "--port-a", str(port_a), "--port-b", str(port_b)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={name: value for name, value in os.environ.items() if name not in drop},
            start_new_session=True,
            preexec_fn=stop_signals_at_default,
        )
    demo = Demo(process, log_path, port_a, port_b)
    try:
        yield demo
    finally:
        demo.kill_everything()


def count(demo: Demo, program: str) -> int:
    return sum(program in command for command in demo.commands)


@pytest.mark.parametrize("signo", STOP_SIGNALS, ids=lambda signo: signal.Signals(signo).name)
def test_a_stop_signal_stops_everything(signo: int, tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        demo.wait_for_urls()
        demo.take_descendants()
        assert (count(demo, "nats-server"), count(demo, "daphne")) == (1, 2), demo.commands
        assert {demo.port_a, demo.port_b} < demo.listening_ports
        demo.process.send_signal(signo)
        demo.assert_stopped_by(signo)
        assert f"{signal.Signals(signo).name}: stopping" in demo.output()


def test_sigkill_takes_the_children_along(tmp_path: Path) -> None:
    """No cleanup runs in the demo: the kernel's death signal (PR_SET_PDEATHSIG) does it."""
    with running_demo(tmp_path) as demo:
        demo.wait_for_urls()
        demo.take_descendants()
        assert (count(demo, "nats-server"), count(demo, "daphne")) == (1, 2), demo.commands
        nats = next(command for command in demo.commands if "nats-server" in command).split()
        try:
            demo.process.kill()
            demo.assert_stopped_by(signal.SIGKILL)
        finally:  # the one thing a SIGKILLed demo leaves behind: the nats-server's workdir
            shutil.rmtree(Path(nats[nats.index("-sd") + 1]).parent, ignore_errors=True)


def test_a_stop_signal_during_startup_stops_what_was_started(tmp_path: Path) -> None:
    """Port A is held by a socket that never answers: the demo waits in its page fetch, with the
    nats-server and instance B running (A fails to listen), when SIGTERM arrives."""
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,
        running_demo(tmp_path, port_a=silent.getsockname()[1]) as demo,
    ):
        silent.settimeout(STARTUP_TIMEOUT)
        while True:  # its readiness probe connects and sends nothing; the page fetch sends GET
            connection, _ = silent.accept()
            with connection:
                connection.settimeout(STARTUP_TIMEOUT)
                if connection.recv(1024).startswith(b"GET / "):
                    demo.take_descendants()
                    assert count(demo, "nats-server") == 1, demo.commands
                    assert demo.port_b in demo.listening_ports  # instance A may have exited
                    demo.process.send_signal(signal.SIGTERM)
                    demo.assert_stopped_by(signal.SIGTERM)
                    break
        assert "instance A: http://" not in demo.output()


def test_neffos_status_against_the_demo_shows_both_instances(tmp_path: Path) -> None:
    """`manage.py neffos status` (run as an operator would, with the demo's settings and broker)
    lists the demo's two instances once each has a client in the chat."""
    from websockets.sync.client import connect

    with running_demo(tmp_path) as demo:
        demo.wait_for_urls()
        broker = re.search(r"broker (nats://\S+)", demo.output())
        assert broker is not None, demo.output()
        with ExitStack() as clients:
            for port in (demo.port_a, demo.port_b):
                url = f"ws://127.0.0.1:{port}/ws/chat?name=operator"
                client = clients.enter_context(connect(url))
                client.send("M")  # neffos' handshake, then the namespace
                client.recv(timeout=10)
                client.send("$1;chat;;_OnNamespaceConnect;0;0;")
                client.recv(timeout=10)
                client.send("$2;chat;lobby;_OnRoomJoin;0;0;")
                while not client.recv(timeout=10).startswith("$2;"):
                    pass  # notices of the join come first
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO / "testproject"), str(REPO)]),
                "DJANGO_SETTINGS_MODULE": "testproject.settings",
                "CHANNEL_LAYER": "nats",
                "NATS_URL": broker.group(1),
            }
            env.pop("CHANNEL_PREFIX", None)  # the demo's default prefix
            run = subprocess.run(
                [sys.executable, "testproject/manage.py", "neffos", "status"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert run.returncode == 0, run.stderr
        print(run.stdout)
        assert "instances: 2 live" in run.stdout, run.stdout
        assert run.stdout.count(" connected ") == 2, run.stdout
        assert run.stdout.count("connections: chat 1; rooms: chat/lobby (1)") == 2, run.stdout
        demo.take_descendants()
        daphnes = {p.pid for p in demo.descendants if "daphne" in " ".join(p.cmdline())}
        assert all(f":{pid} " in run.stdout for pid in daphnes), (daphnes, run.stdout)
