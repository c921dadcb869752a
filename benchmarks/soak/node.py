"""One Node process of soak clients (``clients.mjs``), driven over its stdin and stdout."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

#: The Node script: a block of the run's neffos.js clients.
SCRIPT = Path(__file__).resolve().parent / "clients.mjs"


class NodeClients:
    """One ``node clients.mjs`` process: its JSON lines arrive on ``lines`` (read by a thread)."""

    def __init__(self, config: dict[str, Any], stderr: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last: dict[str, dict[str, Any]] = {}  # the last line of each phase
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))
        self.lines.put(None)  # end of output

    def wait_for(self, phase: str, deadline: float) -> dict[str, Any]:
        """The next line of ``phase``; progress lines met on the way are printed."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {phase!r} from node within the time limit") from None
            if line is None:
                raise RuntimeError(f"node exited ({self.process.wait()}) before {phase!r}")
            self.last[line["phase"]] = line
            if line["phase"] == "error":
                raise RuntimeError(f"node failed: {line['error']}")
            if line["phase"] == phase:
                return line
            if line["phase"] == "progress":
                _print_progress(line)

    def start(self, start_ms: float, stop_ms: float) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"start": start_ms, "stop": stop_ms}) + "\n")
        self.process.stdin.flush()

    def drain_progress(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self.lines.put(None)
                return
            self.last[line["phase"]] = line
            if line["phase"] == "progress":
                _print_progress(line)
            else:
                self.lines.put(line)  # for wait_for
                return


def _print_progress(line: dict[str, Any]) -> None:
    print(
        f"  node: sent {line['sent']}, received {line['received']}, asks {line['asks']} "
        f"({line['askFailures']} failed), joins {line['joins']}, errors {line['errors']}, "
        f"loop lag ≤ {line['loop_lag_max_ms']:.0f} ms",
        flush=True,
    )
