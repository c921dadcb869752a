"""Redis Cluster with sharded pub/sub (the default on ``cluster=True``): pub/sub that scales out.

Classic ``PUBLISH`` on a cluster is copied by the cluster bus to every node, so nodes add no
pub/sub capacity. A *shard channel* (``SPUBLISH``/``SSUBSCRIBE``, Redis ≥ 7, Valkey) lives on
the primary that owns its hash slot and goes nowhere else. Here every subject is a shard
channel:

* Names: the core gives this transport no wildcard (``pattern_subscriptions`` is false), so a
  process has one exact subject ``P:<pid>`` for everything addressed to it, and each group its
  own ``P:g:<group>``. On the wire each name gets a hash tag after the prefix —
  ``P:{<tag>}:<pid>``, ``P:{<tag>}:g:<group>`` — chosen from the subject's shard key among 120
  evenly spaced tags (:mod:`~channels_neffos.transports.redis_slots`): channels spread evenly
  over the primaries by construction, and all names of one tag share a slot.
* Connections: one pipelined command connection to every primary (``SPUBLISH`` goes to the
  slot's owner, coalesced and pipelined as on one server), and one pub/sub connection to each
  primary that owns a subject this process subscribes. Worker channels and the registry of
  processes are keys, sent by redis-py's ``RedisCluster`` to their slot's node
  (:class:`~channels_neffos.transports.redis_cluster.ClusterKeys`).
* ``SPUBLISH`` answers how many subscribers the shard channel has, and they are all on that
  primary: a publish to a process nobody receives for is counted (``no_subscriber``), and an
  ask to a channel of a process that is gone fails at once with ``NoResponders``.

Following the cluster — what can be lost, and how it is counted:

* The slot map is read with ``CLUSTER SLOTS`` at start and again whenever a node says a slot
  moved: a ``MOVED`` answer to an ``SPUBLISH`` (that message is lost: ``moved``), a ``MOVED``
  refusal of an ``SSUBSCRIBE``, or the ``sunsubscribe`` a node sends its subscribers when it
  gives a slot away (resharding) or stops being a primary (failover). The subscriptions of
  each moved slot are re-issued at the new owner, one ``SSUBSCRIBE`` per slot.
* A primary that stops answering: its connections are reported lost (``broker_down`` for what is
  published to its slots meanwhile) and the slot map is read from the other nodes every quarter
  second until its slots have an owner that answers — itself again, or the replica promoted in
  its place — and its subscriptions are re-issued there.
* Until a subscription is re-issued, messages published to it reach nobody; those for a
  process are counted by their publisher as ``no_subscriber``, those for a group are not
  (a group publish cannot tell a missing subscriber from an absent member). Order is kept per
  publisher and subject.

Every process of a prefix must use the same mode (sharded or classic): their names differ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._aio import log_failure
from ..exceptions import BrokerUnavailable
from .base import (
    HistoryLimits,
    HistorySlice,
    OnMessage,
    Subject,
    Transport,
    TransportEvents,
)
from .redis import REDIS_MAX_PAYLOAD, RedisTransport
from .redis_cluster import ClusterKeys, KeysOnTheCluster
from .redis_connect import ErrorConversion, RedisCommandError, host_secrets, redact_redis_url
from .redis_slots import SLOTS, key_slot, shard_tag

logger = logging.getLogger("channels_neffos.redis")

Address = tuple[str, int]
_T = TypeVar("_T")
#: How often the slot map is read again while a slot's owner does not answer (seconds).
_FOLLOW_INTERVAL = 0.25
#: How many times a subscribe or an ask follows a MOVED answer before giving up.
_MOVES = 3


class ShardedPubSubUnsupported(BrokerUnavailable):
    """The cluster's servers have no sharded pub/sub (Redis < 7)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            url,
            "this server has no sharded pub/sub (SPUBLISH/SSUBSCRIBE come with Redis 7 and "
            'Valkey); upgrade it, or set cluster_pubsub="classic" to use classic pub/sub '
            "through one node",
            cause="error",
        )


def node_url(seed: str, address: Address) -> str:
    """``seed``'s URL (scheme, credentials, options) for the node at ``address``."""
    parts = urlsplit(seed)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host, port = address
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{where}"))


def parse_slot_map(reply: Any, asked: Address) -> list[tuple[int, int, Address]]:
    """``(first slot, last slot, primary)`` of each range in a ``CLUSTER SLOTS`` answer. A node
    named without a host (an empty string) is the node that answered, ``asked``."""
    ranges = []
    for entry in reply or ():
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        ranges.append((first, last, (host or asked[0], int(primary[1]))))
    return ranges


class ShardedClusterTransport(KeysOnTheCluster, Transport):
    pattern_subscriptions = False
    max_payload = REDIS_MAX_PAYLOAD

    def __init__(self, hosts: list[str], prefix: str, events: TransportEvents) -> None:
        self._hosts = hosts
        self._prefix = prefix
        self._events = events
        self.url = "cluster " + ", ".join(redact_redis_url(host) for host in hosts)
        secrets = frozenset().union(*(host_secrets(host) for host in hosts))
        self._conversion = ErrorConversion(self.url, secrets)
        self._keys = ClusterKeys(hosts, prefix, self._conversion.errors)
        #: A transport per node that owns slots (or was asked for the map).
        self._nodes: dict[Address, RedisTransport] = {}
        #: The owner of each slot, as the map said last.
        self._owners: list[RedisTransport | None] = [None] * SLOTS
        #: Each subject as it goes on the wire, and its slot.
        self._placed: dict[Subject, tuple[Subject, int]] = {}
        #: What this process subscribes (by wire name) and the node it is subscribed at now
        #: (None: to be re-issued at its slot's owner).
        self._wanted: dict[bytes, tuple[Subject, int, OnMessage]] = {}
        self._homes: dict[bytes, RedisTransport | None] = {}
        self._follower: asyncio.Task[None] | None = None
        self._follow_again = False
        self._closed = False

    # -- naming --------------------------------------------------------------------------------

    def subject(self, *parts: str) -> str:
        return ":".join(parts)

    def wildcard(self, *parts: str) -> str:
        return ":".join((*parts, "*"))  # worker queues only: keys, not shard channels

    def _place(self, subject: Subject) -> tuple[Subject, int]:
        """``subject`` with its hash tag after the prefix, and its slot."""
        placed = self._placed.get(subject)
        if placed is None:
            if len(self._placed) >= 10_000:
                self._placed.clear()
            rest = subject.name[len(self._prefix) + 1 :]
            name = f"{self._prefix}:{{{shard_tag(subject.shard)}}}:{rest}"
            placed = self._placed[subject] = (subject._replace(name=name), key_slot(name.encode()))
        return placed

    # -- lifecycle -----------------------------------------------------------------------------

    def _node(self, address: Address) -> RedisTransport:
        node = self._nodes.get(address)
        if node is None:
            url = node_url(self._hosts[0], address)
            node = self._nodes[address] = RedisTransport(
                url,
                self._prefix,
                _NodeEvents(self, self._events),
                sharded=True,
                on_moved=self._moved,
            )
        return node

    async def connect(self) -> None:
        failure: BrokerUnavailable | None = None
        for seed in self._hosts:
            parts = urlsplit(seed)
            probe = self._node((parts.hostname or "localhost", parts.port or 6379))
            try:
                await probe.connect()
                command_info = await probe.execute(b"COMMAND", b"INFO", b"SPUBLISH")
                if not command_info or command_info[0] is None:
                    raise ShardedPubSubUnsupported(self.url)
                await self._read_slot_map(probe)
                await self._prune()
                break
            except ShardedPubSubUnsupported:
                await self.close()
                raise
            except BrokerUnavailable as exc:
                failure = exc
        else:
            await self.close()
            cause = failure.cause if failure is not None else "unreachable"
            reason = f"no seed node answered; the last said: {failure}"
            raise BrokerUnavailable(self.url, reason, cause=cause) from failure
        await self._connect_owners()

    async def _read_slot_map(self, asked: RedisTransport) -> None:
        """Read the map from ``asked``; route every slot to its primary's transport."""
        reply = await asked.execute(b"CLUSTER", b"SLOTS")
        address = next(a for a, node in self._nodes.items() if node is asked)
        owners: list[RedisTransport | None] = [None] * SLOTS
        for first, last, primary in parse_slot_map(reply, address):
            node = self._node(primary)
            owners[first : last + 1] = [node] * (last - first + 1)
        self._owners = owners

    async def _connect_owners(self) -> bool:
        """Connect every slot owner not connected (nor reconnecting by itself); whether all
        are connected now."""
        owners = {id(node): node for node in self._owners if node is not None}.values()
        pending = [node for node in owners if not node.connected and not node.reconnecting]
        connecting = (node.connect() for node in pending)
        results = await asyncio.gather(*connecting, return_exceptions=True)
        for node, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                logger.debug("Redis Cluster node %s does not answer: %s", node.url, result)
        return all(node.connected for node in owners)

    async def _prune(self) -> None:
        """Close the nodes that own no slot and hold no subscription of ours (a dead primary
        whose replica took over, a node that gave all its slots away)."""
        owning = {id(node) for node in self._owners if node is not None}
        owning |= {id(node) for node in self._homes.values() if node is not None}
        for address, node in list(self._nodes.items()):
            if id(node) not in owning:
                del self._nodes[address]
                await node.close()

    async def close(self) -> None:
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.close() for node in nodes))
        await self._keys.close()

    # -- following the cluster -----------------------------------------------------------------

    def _moved(self, keys: list[bytes]) -> None:
        """A node no longer serves the slot of ``keys`` (shard channels, or the name of a
        message it refused): re-read the map and re-issue what it dropped."""
        for key in keys:
            if key in self._homes:
                self._homes[key] = None
        self.follow()

    def follow(self) -> None:
        """Re-read the slot map and move subscriptions where it says, soon (once at a time)."""
        if self._closed:
            return
        if self._follower is not None and not self._follower.done():
            self._follow_again = True
            return
        self._follower = asyncio.get_running_loop().create_task(
            self._follow(), name=f"channels_neffos follows {self.url}"
        )
        self._follower.add_done_callback(partial(log_failure, logger, "following the cluster"))

    async def _follow(self) -> None:
        moved_any = False
        while not self._closed:
            self._follow_again = False
            settled = await self._reread_slot_map()
            if settled is not None:
                moved_any |= await self._rehome()
                await self._prune()
            if settled and not self._follow_again:
                break
            await asyncio.sleep(_FOLLOW_INTERVAL)
        if moved_any:
            self._events.connection_restored()

    async def _rehome(self) -> bool:
        """Subscribe every wanted subject at its slot's owner where it is not (all at once, each
        confirmed); whether any was moved."""
        moves = []
        for key, (wire, slot, on_message) in list(self._wanted.items()):
            owner = self._owners[slot]
            home = self._homes.get(key)
            if owner is None or home is owner or not owner.connected:
                continue
            if home is not None:
                await home.unsubscribe(wire)
            self._homes[key] = owner
            moves.append(self._move(key, wire, on_message, owner))
        await asyncio.gather(*moves)
        return bool(moves)

    async def _move(
        self, key: bytes, wire: Subject, on_message: OnMessage, owner: RedisTransport
    ) -> None:
        try:
            await owner.subscribe(wire, on_message)
        except (BrokerUnavailable, RedisCommandError) as exc:
            self._homes[key] = None  # the next round tries again
            logger.warning("re-subscribing %s at %s failed: %s", wire.name, owner.url, exc)
            self._follow_again = True

    # -- pub/sub -------------------------------------------------------------------------------

    def _owner(self, slot: int) -> RedisTransport:
        owner = self._owners[slot]
        if owner is None:
            self.follow()
            raise BrokerUnavailable(self.url, f"no node of the cluster serves hash slot {slot}")
        return owner

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        wire, slot = self._place(subject)
        key = wire.name.encode()
        self._wanted[key] = (wire, slot, on_message)
        for attempt in range(_MOVES):
            owner = self._owner(slot)
            self._homes[key] = owner
            try:
                await owner.subscribe(wire, on_message)
                return
            except RedisCommandError as exc:
                self._homes[key] = None
                if not str(exc).startswith("MOVED") or attempt == _MOVES - 1:
                    del self._wanted[key]
                    raise self._conversion.converted(exc) from None
                await self._reread_slot_map()
            except BaseException:
                self._wanted.pop(key, None)
                self._homes.pop(key, None)
                raise

    async def _reread_slot_map(self) -> bool | None:
        """Read the map from any node that answers and connect its owners: whether every owner
        is connected now (None: no node answered)."""
        for node in [n for n in self._nodes.values() if n.connected]:
            try:
                await self._read_slot_map(node)
            except BrokerUnavailable:
                continue
            return await self._connect_owners()
        return None

    async def unsubscribe(self, subject: Subject) -> None:
        wire, _ = self._place(subject)
        key = wire.name.encode()
        self._wanted.pop(key, None)
        home = self._homes.pop(key, None)
        if home is not None:
            await home.unsubscribe(wire)

    async def publish(self, subject: Subject, payload: bytes) -> None:
        placed = self._placed.get(subject)
        wire, slot = self._place(subject) if placed is None else placed
        owner = self._owners[slot]
        if owner is None:
            owner = self._owner(slot)
        await owner.publish(wire, payload)

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        wire, slot = self._place(subject)
        return await self._at_owner(
            slot, lambda owner: owner.publish_request(wire, payload, reply_to)
        )

    async def _at_owner(self, slot: int, call: Callable[[RedisTransport], Awaitable[_T]]) -> _T:
        """``call`` the owner of ``slot``, following a ``MOVED`` answer to the new owner."""
        attempt = 1
        while True:
            try:
                return await call(self._owner(slot))
            except BrokerUnavailable as exc:
                if attempt == _MOVES or not str(exc.__cause__).startswith("MOVED"):
                    raise
            attempt += 1
            await self._reread_slot_map()

    # -- history: the stream, its hash and the shard channel share the group's tag, so one slot

    keeps_history = True

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        """At the slot's owner; a ``MOVED`` answer is counted (``moved``) and followed."""
        wire, slot = self._place(subject)
        owner = self._owners[slot]
        if owner is None:
            owner = self._owner(slot)
        owner.history_append(wire, payloads, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        wire, slot = self._place(subject)
        return await self._at_owner(
            slot, lambda owner: owner.history_read(wire, since, limit, limits)
        )


class _NodeEvents:
    """The events of one node's transport: passed on, and a lost connection makes the cluster
    transport read the slot map until the node's slots have an owner that answers."""

    def __init__(self, cluster: ShardedClusterTransport, events: TransportEvents) -> None:
        self._cluster = cluster
        self._events = events

    def connection_lost(self, reason: BaseException | None) -> None:
        self._events.connection_lost(reason)
        self._cluster.follow()

    def connection_restored(self) -> None:
        self._events.connection_restored()

    def dropped(self, reason: str, where: str) -> None:
        self._events.dropped(reason, where)

    def request_failed(self, reply_to: str, error: Exception) -> None:
        self._events.request_failed(reply_to, error)
