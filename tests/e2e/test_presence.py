"""Presence end to end: "who is here?" in testproject's chat, exact across two daphne instances.

200 neffos.js clients (100 per instance) join one room; "who", asked on each instance as soon as
every join was answered, lists exactly the 200. Then 50 of them lose their TCP connection with
no WebSocket close frame (FIN or RST); "who" is asked in a loop on both instances until it lists
exactly the 150 left (within 5 s). No answer may miss a connected client, and none may list a
client once the asker was told it left (the chat sends that notice after the server withdrew the
connection). The Node side is testproject/e2e/presence.mjs.
"""

from __future__ import annotations

import pytest

from .conftest import Instance
from .test_fanout import run_node, urls


@pytest.mark.parametrize(
    "two_instances_on",
    [("nats", "daphne"), ("redis", "daphne")],
    indirect=True,
    ids=["nats-daphne", "redis-daphne"],
)
def test_who_is_exact_after_joins_and_after_abrupt_disconnects(
    two_instances_on: list[Instance],
) -> None:
    results = run_node("presence.mjs", *urls(two_instances_on), "100", "50", timeout=60)
    assert results["no answer listed a client after its leave was announced"]["ok"]
    for instance in two_instances_on:
        assert "Traceback" not in instance.log(), instance.log()[-3000:]
