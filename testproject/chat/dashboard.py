"""The live dashboard: a neffos namespace, ``dashboard``, that pushes the layer's state each second.

A client connected to it gets the event ``stats`` once a second, a JSON document with every live
instance of the layer (through ``layer.instances()``: each process answers with its own
snapshot), its rate of messages through the broker, drops by reason, and the chat's rooms with
their members on every instance (the namespaces' presence). See templates/dashboard/index.html.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from channels_neffos import BrokerUnavailable, PresenceUnavailable
from channels_neffos.namespaces import Namespace, presence

#: How often a dashboard is sent a new snapshot, in seconds.
INTERVAL = 1.0
#: The group of a chat room, as channels_neffos.namespaces.groups names it (readable names).
ROOM_GROUP = "ns.chat.r."
#: At most this many rooms are shown (the largest).
SHOWN_ROOMS = 20
_CONNECTION_EVENTS = {"connection_lost", "connection_restored", "presence_timeout", "late_replies"}


class Dashboard(Namespace):
    name = "dashboard"

    async def on_connect(self) -> None:
        self._pusher = asyncio.ensure_future(self._push())

    async def on_disconnect(self) -> None:
        self._pusher.cancel()

    async def _push(self) -> None:
        previous: dict[str, tuple[float, int]] = {}
        while True:
            try:
                snapshot = await self.snapshot(previous)
            except (BrokerUnavailable, PresenceUnavailable) as exc:
                snapshot = {"error": str(exc), "at": time.time()}
            await self.emit("stats", json.dumps(snapshot))
            await asyncio.sleep(INTERVAL)

    async def snapshot(self, previous: dict[str, tuple[float, int]]) -> dict[str, Any]:
        layer = self.connection.channel_layer
        now = time.monotonic()
        instances = []
        rooms: set[str] = set()
        for process in await layer.instances():
            traffic = process.published + process.received
            before = previous.get(process.pid)
            rate = (traffic - before[1]) / (now - before[0]) if before else 0.0
            previous[process.pid] = (now, traffic)
            drops = {
                reason: count
                for reason, count in process.counters.items()
                if count and reason not in _CONNECTION_EVENTS
            }
            rooms |= {
                g[len(ROOM_GROUP) :] for g in process.largest_groups if g.startswith(ROOM_GROUP)
            }
            instances.append(
                {
                    "pid": process.pid,
                    "where": f"{process.host}:{process.os_pid}",
                    "uptime": round(process.uptime),
                    "connected": process.connected,
                    "channels": process.channels,
                    "groups": process.groups,
                    "messages_per_second": round(rate, 1),
                    "drops": drops,
                }
            )
        sizes = await asyncio.gather(*(presence("chat", room, layer=layer) for room in rooms))
        members = sorted(
            ((room, len(entries)) for room, entries in zip(rooms, sizes, strict=True)),
            key=lambda item: (-item[1], item[0]),
        )[:SHOWN_ROOMS]
        return {
            "at": time.time(),
            "instances": sorted(instances, key=lambda item: item["where"]),
            "rooms": [{"room": room, "members": count} for room, count in members if count],
        }
