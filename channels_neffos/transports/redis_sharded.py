"""Several independent Redis servers as one transport: every subject lives on exactly one of them.

``RedisChannelLayer(hosts=[a, b, c])`` spreads one application over several Redis servers (not a
Redis Cluster: plain servers, as ``channels_redis`` shards them). Each subject is owned by one
server, chosen by a stable hash (CRC-32) of its *shard key*:

* a process's channels and reply addresses ``P:<pid>:...`` by the ``pid`` — so the process's one
  ``PSUBSCRIBE P:<pid>:*`` and every ``PUBLISH`` to its channels meet on the same server;
* a group ``P:g:<group>`` by the group name;
* a worker channel's list ``P:q:<name>`` by the channel name.

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
from .base import OnMessage, ProcessRegistry, Transport
from .redis import RedisTransport
from .redis_registry import registry_key

#: Second parts of a subject that are a kind, not a pid: the shard key is the part after them.
_KIND_PARTS = frozenset(("g", "q"))


def shard_key(subject: str) -> str:
    """The part of a channels_neffos Redis subject (or pattern) that chooses its server."""
    parts = subject.split(":", 3)
    if len(parts) < 3:
        raise ValueError(f"not a channels_neffos subject: {subject!r}")
    return parts[2] if parts[1] in _KIND_PARTS else parts[1]


class ShardedRedisTransport(Transport):
    def __init__(self, shards: list[RedisTransport]) -> None:
        if len(shards) < 2:
            raise ValueError("a sharded transport needs at least two servers")
        self.shards = shards
        self.url = ", ".join(shard.url for shard in shards)
        self.max_payload = min(shard.max_payload for shard in shards)
        self._by_subject: dict[str, RedisTransport] = {}

    def shard(self, subject: str) -> RedisTransport:
        shard = self._by_subject.get(subject)  # remembered: publishes repeat their subjects
        if shard is None:
            if len(self._by_subject) >= 10_000:
                self._by_subject.clear()
            index = zlib.crc32(shard_key(subject).encode()) % len(self.shards)
            shard = self._by_subject[subject] = self.shards[index]
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

    async def subscribe(self, subject: str, on_message: OnMessage) -> None:
        await self.shard(subject).subscribe(subject, on_message)

    async def unsubscribe(self, subject: str) -> None:
        await self.shard(subject).unsubscribe(subject)

    async def publish(self, subject: str, payload: bytes, reply_to: str | None = None) -> None:
        await self.shard(subject).publish(subject, payload, reply_to)

    async def publish_request(self, subject: str, payload: bytes, reply_to: str) -> int | None:
        return await self.shard(subject).publish_request(subject, payload, reply_to)

    async def queue_push(
        self, name: str, payload: bytes, capacity: int, ttl: float, reply_to: str | None = None
    ) -> bool:
        return await self.shard(name).queue_push(name, payload, capacity, ttl, reply_to)

    async def queue_pop(self, name: str, timeout: float, capacity: int) -> bytes | None:
        return await self.shard(name).queue_pop(name, timeout, capacity)

    def registry(self) -> ProcessRegistry:
        """On the server its key hashes to, as any other key."""
        key = registry_key(self.shards[0].prefix)
        return self.shard(key).registry()

    async def queue_flush(self) -> None:
        for shard in self.shards:
            await shard.queue_flush()
