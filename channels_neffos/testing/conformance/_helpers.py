"""Helpers shared by the conformance cases."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.utils.module_loading import import_string

RECEIVE_TIMEOUT = 5.0


def unique_prefix() -> str:
    return "t" + secrets.token_hex(6)


@dataclass(frozen=True)
class LayerSpec:
    """How to build the layer under test: a ``BACKEND`` path and its ``CONFIG``."""

    backend: str
    config: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Any:
        return import_string(self.backend)(**{**self.config, **overrides})

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "config": self.config})


async def receive_within(layer: Any, channel: str, timeout: float = RECEIVE_TIMEOUT) -> Any:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = RECEIVE_TIMEOUT,
    what: str = "the condition",
) -> None:
    """Return as soon as ``condition()`` (a function, or a coroutine function) is true; fail
    the test if it is not within ``timeout`` seconds. For waiting on an outcome instead of
    sleeping a fixed time: as fast as the outcome, and never too short on a slow machine."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.01)


async def assert_nothing_arrives(layer: Any, channel: str, wait: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), wait)


async def run_child(spec: LayerSpec, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "channels_neffos.testing._child",
        spec.to_json(),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


BAD_CHANNEL_NAMES = [
    "",
    "spaces are bad",
    "tab\tchannel",
    "x" * 100,
    "über-ascii",
    "two!bangs!",
    "colon:channel",
    "star*",
    b"bytes-name",
    None,
    42,
]
BAD_GROUP_NAMES = ["", "has space", "bang!", "x" * 100, "ümlaut", None, b"bytes"]
