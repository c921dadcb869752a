"""Redis Cluster: pub/sub through any one node, worker channels on the node of their hash slot.

``RedisChannelLayer(hosts=[seed, ...], cluster=True)`` uses a Redis Cluster. Classic Redis pub/sub
is cluster-wide — the cluster bus copies every ``PUBLISH`` to every node — so this process's
pattern ``P:<pid>:*``, its group subscriptions and its publishes all go through one node, as on
a single server (:class:`~channels_neffos.transports.redis.RedisTransport`). Which node does not
matter: a random seed first (so processes spread their subscribers over the seeds), and after a
failed or lost connection the next seed in turn, so a failed node is left behind. Worker
channels are lists, that is keys: redis-py's ``RedisCluster`` sends each push, pop and flush to
the node that owns the key's slot, following redirections and failovers.

What differs from one server:

* ``PUBLISH`` counts only the subscribers on the node that took it, so it cannot say "nobody is
  listening". An ask to a group with no members, or to a channel of a process that is gone,
  therefore ends in ``AskTimeout`` instead of ``NoResponders``. (A channel that a live process
  no longer has still answers ``NoResponders`` at once: that process says so.)
* Every message crosses the cluster bus to every node: pub/sub throughput does not grow with the
  number of nodes. A cluster buys availability here, not fan-out capacity.
* Messages published while this process's pub/sub node is down or being replaced are lost, as on
  one server; publish order is kept per publishing process.

Refusals are classified as on one server (``RedisTransport.broker_unavailable``): an ACL refusal of
a worker-channel push raises ``PermissionDenied``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection, parse_url

from .._aio import BackgroundTasks
from ..exceptions import BrokerUnavailable
from . import redis_history
from ._resp import Pause, RespConnection
from .base import HistoryLimits, HistorySlice, ProcessRegistry, Subject, TransportEvents
from .redis import _PUSH_IF_ROOM, RedisTransport
from .redis_connect import BrokerErrors, redis_pool
from .redis_registry import RedisRegistry, registry_key

logger = logging.getLogger("channels_neffos.redis")


class _SeedRotation:
    """A :class:`~channels_neffos.transports._resp.ConnectionSource` over several seed nodes:
    each new connection goes to the next seed, so reconnecting after a failure tries another
    node. Nodes fail over by themselves: there is no master to follow."""

    def __init__(self, pools: list[ConnectionPool]) -> None:
        self._pools = pools
        self._next = random.randrange(len(pools))  # processes spread over the seeds

    def make_connection(self) -> AbstractConnection:
        pool = self._pools[self._next % len(self._pools)]
        self._next += 1
        return pool.make_connection()

    @property
    def failovers(self) -> None:
        return None

    async def disconnect(self) -> None:
        await asyncio.gather(*(pool.disconnect() for pool in self._pools))

    @asynccontextmanager
    async def master_watch(self) -> AsyncIterator[Pause]:
        yield asyncio.sleep

    def blocking_pool(self) -> ConnectionPool:
        raise NotImplementedError("a cluster's blocking commands go through RedisCluster")


def cluster_client(hosts: list[str]) -> RedisCluster:
    """A redis-py cluster client that discovers the cluster from the seed URLs."""
    options = parse_url(hosts[0])
    nodes = []
    for url in hosts:
        parsed = parse_url(url)
        nodes.append(ClusterNode(parsed.get("host", "localhost"), parsed.get("port", 6379)))
    extra: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": 5}
    for key in ("username", "password"):
        if key in options:
            extra[key] = options[key]
    if options.get("connection_class") is SSLConnection:
        extra["ssl"] = True
    return RedisCluster(startup_nodes=nodes, **extra)


class ClusterKeys:
    """What lives in a cluster's keys, each on the node of its hash slot: worker channels (lists)
    and the registry of processes. redis-py's ``RedisCluster`` sends each command to the node that
    owns the key's slot, following redirections and failovers; ``errors`` converts what it
    raises."""

    def __init__(self, hosts: list[str], prefix: str, errors: BrokerErrors) -> None:
        self.client = cluster_client(hosts)
        self._prefix = prefix
        self._errors = errors
        self._appends = BackgroundTasks(logger, "a history append on the cluster")
        self._last_append: asyncio.Future[None] | None = None

    async def close(self) -> None:
        await self._appends.wait(timeout=5.0)
        await self._appends.close()
        await self.client.aclose()

    def registry(self) -> ProcessRegistry:
        return RedisRegistry(registry_key(self._prefix), self._eval, self._eval)

    async def _eval(self, script: str, key: str, *args: str | int | bytes) -> Any:
        with self._errors:
            return await self.client.eval(script, 1, key, *args)

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        """Classic pub/sub: the script runs on the slot's node, and its PUBLISH reaches every
        node through the cluster bus. redis-py's cluster client sends it from a task: unlike on
        one server or a sharded cluster, an append is not on the wire when this returns, and
        one that fails is logged by the task; appends go one after the other, in call order."""
        stream = redis_history.cluster_stream_key(subject.name)
        args = redis_history.append_args(stream, subject.name, b"PUBLISH", payloads, limits, epoch)

        previous = self._last_append

        async def append() -> None:
            if previous is not None:  # one after the other: the client has a pool of connections
                await asyncio.wait([previous])
            with self._errors:
                await self.client.eval(redis_history.APPEND, *args)

        self._last_append = self._appends.spawn(append())

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        stream = redis_history.cluster_stream_key(subject.name)
        args = redis_history.read_args(stream, since, limit, limits)
        with self._errors:
            reply = await self.client.eval(redis_history.READ, *args)
        return redis_history.read_slice(reply)

    async def queue_push(self, queue: Subject, payload: bytes, capacity: int, ttl: float) -> bool:
        ttl_seconds = max(1, int(ttl) + 1)
        return bool(await self._eval(_PUSH_IF_ROOM, queue.name, payload, capacity, ttl_seconds))

    async def queue_pop(self, queue: Subject, timeout: float) -> bytes | None:
        with self._errors:
            popped = await self.client.brpop([queue.name], timeout=timeout)
        if popped is None:
            return None
        payload = popped[1]
        return payload if isinstance(payload, bytes) else payload.encode()

    async def queue_flush(self, queues: Subject) -> None:
        with self._errors:
            keys = [key async for key in self.client.scan_iter(match=queues.name, count=1000)]
            for start in range(0, len(keys), 500):
                await self.client.unlink(*keys[start : start + 500])


class KeysOnTheCluster:
    """The worker-channel and registry methods of a cluster transport: its :class:`ClusterKeys`."""

    _keys: ClusterKeys

    def registry(self) -> ProcessRegistry:
        return self._keys.registry()

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        return await self._keys.queue_push(queue, payload, capacity, ttl)

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        return await self._keys.queue_pop(queue, timeout)

    async def queue_flush(self, queues: Subject) -> None:
        await self._keys.queue_flush(queues)


class ClusterRedisTransport(KeysOnTheCluster, RedisTransport):
    """Classic pub/sub through one node of the cluster (``cluster_pubsub="classic"``)."""

    def __init__(self, hosts: list[str], prefix: str, events: TransportEvents) -> None:
        seeds = [redis_pool(host) for host in hosts]
        url = "cluster " + ", ".join(seed_url for _, seed_url in seeds)
        rotation = _SeedRotation([pool for pool, _ in seeds])
        super().__init__(hosts[0], prefix, events, pool=(rotation, url))
        self._seed_count = len(hosts)
        self._keys = ClusterKeys(hosts, prefix, self._errors)

    async def _open(self, connection: RespConnection) -> None:
        for attempt in range(self._seed_count):  # each attempt takes the next seed
            try:
                await super()._open(connection)
                return
            except BrokerUnavailable:
                if attempt == self._seed_count - 1:
                    raise

    async def close(self) -> None:
        await super().close()
        await self._keys.close()

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        await self.publish(subject, payload)
        return None  # a node counts only its own subscribers: the count means nothing here

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        self._keys.history_append(subject, payloads, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        return await self._keys.history_read(subject, since, limit, limits)
