"""Sampling the soak's processes: RSS and CPU of the instances, the broker and the Node clients.

The broker is killed and started again during the run: its process is looked up again at each
sample. The rows go to the run's ``run.json``; :mod:`benchmarks.soak.report` sums them up.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped]

from channels_neffos.testing.brokers import BrokerProcess

#: RSS/CPU sampling period, seconds.
SAMPLE_EVERY = 2.0


@dataclass
class Sampler:
    """Samples RSS (MB) and CPU (% of one core) of the instances, the broker and the Node
    processes, and the whole machine's CPU and load."""

    instances: dict[str, psutil.Process]
    broker: BrokerProcess
    node: list[psutil.Process]
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _broker_process: psutil.Process | None = None

    def _broker_now(self) -> psutil.Process | None:
        # BrokerProcess keeps its Popen private; a restart makes a new process, a new pid.
        popen = getattr(self.broker, "_process", None)
        if popen is None or popen.poll() is not None:
            return None
        if self._broker_process is None or self._broker_process.pid != popen.pid:
            self._broker_process = psutil.Process(popen.pid)
            self._broker_process.cpu_percent(None)
        return self._broker_process

    def sample(self) -> None:
        row: dict[str, Any] = {"t": time.time()}
        processes: dict[str, psutil.Process | None] = {
            **self.instances,
            "broker": self._broker_now(),
        }
        for name, process in processes.items():
            try:
                row[name] = process.memory_info().rss / 2**20 if process else None
                row[f"{name}_cpu"] = process.cpu_percent(None) if process else None
            except psutil.Error:
                row[name] = row[f"{name}_cpu"] = None
        node_rss = node_cpu = 0.0
        for process in self.node:
            with suppress(psutil.Error):
                node_rss += process.memory_info().rss / 2**20
                node_cpu += process.cpu_percent(None)
        row["node"], row["node_cpu"] = node_rss, node_cpu
        # The machine is shared: what everyone else used shows as machine - ours.
        row["machine_cpu"] = psutil.cpu_percent(None) * (os.cpu_count() or 1)
        row["load_1min"] = os.getloadavg()[0]
        self.samples.append(row)

    def run(self) -> None:
        psutil.cpu_percent(None)  # the first call only starts the measurement, as below
        for process in [*self.instances.values(), *self.node]:
            with suppress(psutil.Error):
                process.cpu_percent(None)
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="rss-sampler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
