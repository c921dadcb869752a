"""Several independent Redis servers as one transport: every subject lives on exactly one of them.

``RedisChannelLayer(hosts=[a, b, c])`` spreads one application over several Redis servers (not a
Redis Cluster: plain servers, as ``channels_redis`` shards them). Each subject is owned by one
server, chosen by a stable hash (CRC-32) of its *shard key*:

* a process's channels and reply addresses ``P:<pid>:...`` by the ``pid`` — so the process's one
  ``PSUBSCRIBE P:<pid>:*`` and every ``PUBLISH`` to its channels meet on the same server;
* a group ``P:g:<group>`` by the group name;
* a worker channel's list ``P:q:<name>`` by the channel name;
* a history group's stream, position and subject ``P:h:<group>`` by the group name.

The core hands every subject over with that key (``Subject.shard``, see
:mod:`channels_neffos._core.names`): this transport never parses a name.

Every layer sharing a prefix must list the same servers in the same order, or publishers and
subscribers will not meet. Connections: one command connection per server, and a pub/sub
connection per server this process subscribes on (its own pattern, plus its groups' servers).

Semantics are those of :mod:`channels_neffos.transports.redis` per server. A server that goes
down takes its share with it — the processes, groups and worker channels that hash to it — while
the others carry on. Publish order is kept per server, so a ``send`` and a ``group_send`` that
reach one channel through different servers may arrive in either order (as on NATS).
"""

from __future__ import annotations

import asyncio
import zlib

from ..exceptions import BrokerUnavailable
from .base import HistoryLimits, HistorySlice, OnMessage, ProcessRegistry, Subject, Transport
from .redis import RedisTransport

#: The shard key of the presence registry's key (``P:p:processes``): "p", as it has always been,
#: so that every version of the layer finds the registry on the same server.
_REGISTRY_SHARD = "p"


class ShardedRedisTransport(Transport):
    def __init__(self, shards: list[RedisTransport]) -> None:
        if len(shards) < 2:
            raise ValueError("a sharded transport needs at least two servers")
        self.shards = shards
        self.url = ", ".join(shard.url for shard in shards)
        self.max_payload = min(shard.max_payload for shard in shards)
        self._by_key: dict[str, RedisTransport] = {}

    def shard(self, key: str) -> RedisTransport:
        """The server of the subjects whose shard key is ``key`` (a CRC-32 of it)."""
        shard = self._by_key.get(key)  # remembered: publishes repeat their keys
        if shard is None:
            if len(self._by_key) >= 10_000:
                self._by_key.clear()
            index = zlib.crc32(key.encode()) % len(self.shards)
            shard = self._by_key[key] = self.shards[index]
        return shard

    # -- naming: as on one server --------------------------------------------------------------

    def subject(self, *parts: str) -> str:
        return self.shards[0].subject(*parts)

    def wildcard(self, *parts: str) -> str:
        return self.shards[0].wildcard(*parts)

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        results = await asyncio.gather(
            *(shard.connect() for shard in self.shards), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await self.close()
            if isinstance(failures[0], BrokerUnavailable):
                raise failures[0]
            raise BrokerUnavailable(self.url, failures[0]) from failures[0]

    async def close(self) -> None:
        await asyncio.gather(*(shard.close() for shard in self.shards))

    # -- routing -------------------------------------------------------------------------------

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        await self.shard(subject.shard).subscribe(subject, on_message)

    async def unsubscribe(self, subject: Subject) -> None:
        await self.shard(subject.shard).unsubscribe(subject)

    async def publish(self, subject: Subject, payload: bytes) -> None:
        await self.shard(subject.shard).publish(subject, payload)

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        return await self.shard(subject.shard).publish_request(subject, payload, reply_to)

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        return await self.shard(queue.shard).queue_push(queue, payload, capacity, ttl, reply_to)

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        return await self.shard(queue.shard).queue_pop(queue, timeout, capacity)

    keeps_history = True

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        self.shard(subject.shard).history_append(subject, payloads, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        return await self.shard(subject.shard).history_read(subject, since, limit, limits)

    def registry(self) -> ProcessRegistry:
        """On the server its key hashes to, as any other key."""
        return self.shard(_REGISTRY_SHARD).registry()

    async def queue_flush(self, queues: Subject) -> None:
        for shard in self.shards:
            await shard.queue_flush(queues)
