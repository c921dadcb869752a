"""Numbered broadcasts into the chat's rooms from outside the instances, as a Celery task would
send them — for the end-to-end tests (tests/e2e/test_recovery.py) and ``benchmarks.storm``.

A :class:`Broadcaster` runs its own event loop in a thread with a layer of its own (configured
like the instances', history rules included). Every ``1 / rate`` seconds it sends one ``chat``
event to each room, whose text is ``"<n>|<send time, epoch ms>"``, ``n`` counting from 1 per
room. A send that fails (the broker is down and the room keeps no history) is counted in
``failed`` and the count goes on. :meth:`Broadcaster.stop` closes the layer — which writes what
it had queued — before it returns how many were sent to each room.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from channels_neffos.namespaces import server


class Broadcaster:
    def __init__(self, layer: Any, rooms: list[str], rate: float) -> None:
        self.layer, self.rooms, self.rate = layer, rooms, rate
        self.sent = dict.fromkeys(rooms, 0)
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                for room in self.rooms:
                    number = self.sent[room] + 1
                    text = f"{number}|{time.time() * 1000:.3f}"
                    body = json.dumps({"from": "broadcaster", "id": "-", "text": text})
                    try:
                        await server.broadcast("chat", "chat", body, room=room, layer=self.layer)
                    except Exception:
                        self.failed += 1
                    self.sent[room] = number
                await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))
        finally:
            await self.layer.close()

    def stop(self) -> dict[str, int]:
        """Stop sending; how many were sent to each room (all written, unless the broker is
        unreachable)."""
        self._stop.set()
        self._thread.join(timeout=30)
        return self.sent
