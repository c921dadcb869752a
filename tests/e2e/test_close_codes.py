"""The server's own close codes reach clients through a real daphne (which refuses 1002/1008)."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from channels_neffos.namespaces.consumer import CLOSE_PROTOCOL_ERROR

from .conftest import Instance


@pytest.mark.parametrize("two_instances_on", [("nats", "daphne")], indirect=True, ids=["daphne"])
def test_a_garbage_first_frame_is_closed_with_4002_and_logs_no_error(
    two_instances_on: list[Instance],
) -> None:
    instance = two_instances_on[0]
    url = instance.url.replace("http://", "ws://") + "/ws/chat"
    for _ in range(20):  # garbage connections must not flood the log with tracebacks
        with connect(url, open_timeout=5, close_timeout=5) as socket:
            socket.send("GET / HTTP/1.1 this is not neffos")
            with pytest.raises(ConnectionClosed):
                socket.recv(timeout=5)
            assert socket.close_code == CLOSE_PROTOCOL_ERROR
    log = instance.log()
    assert "invalid close code" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
