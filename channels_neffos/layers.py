"""The two public layers: the shared core plus a transport and its broker-specific options.

Everything here is configuration: parse and check the ``CONFIG`` options, then build one
transport per event loop. Unknown options raise ``TypeError`` naming the option (Django passes
``CONFIG`` as keyword arguments, so Python's own message already does exactly that).
"""

from __future__ import annotations

from typing import Any

from .channel_layer import NeffosChannelLayer
from .transports.base import Transport, TransportEvents
from .transports.nats import NatsTransport
from .transports.redis import RedisTransport
from .transports.redis_cluster import ClusterRedisTransport
from .transports.redis_cluster_sharded import ShardedClusterTransport
from .transports.redis_connect import redact_redis_url
from .transports.redis_sharded import ShardedRedisTransport
from .transports.sentinel import check_sentinel_host, is_sentinel_host

#: The ways a Redis Cluster can carry pub/sub (``cluster_pubsub``).
CLUSTER_PUBSUB = ("sharded", "classic")


class RedisChannelLayer(NeffosChannelLayer):
    """Channel layer on Redis pub/sub (one PSUBSCRIBE pattern per process) and lists.

    ``hosts``: a list of Redis addresses — each a ``redis://``, ``rediss://`` or ``unix://`` URL,
    or a dict of redis-py connection keyword arguments (``{"address": url, ...}`` or
    ``{"host": ..., "port": ..., "password": ...}``). Several servers share the load: every
    subject lives on one of them (see :mod:`channels_neffos.transports.redis_sharded`).

    A dict with ``"sentinels": [(host, port), ...]`` and ``"master_name"`` is a master found
    through Redis Sentinel, as in ``channels_redis``: ``"sentinel_kwargs"`` are the options for
    connecting to the sentinels (e.g. their password), every other key a connection option for
    the master. The layer follows failovers (see :mod:`channels_neffos.transports.sentinel`);
    several such entries are shards as above.

    ``cluster=True``: ``hosts`` are seed nodes (URLs) of one Redis Cluster. ``cluster_pubsub``
    says how it carries messages: ``"sharded"`` (the default; shard channels spread over the
    primaries, Redis ≥ 7 or Valkey: :mod:`channels_neffos.transports.redis_cluster_sharded`) or
    ``"classic"`` (classic pub/sub through one node, for servers without sharded pub/sub:
    :mod:`channels_neffos.transports.redis_cluster`). Every process of a prefix must use the
    same one.
    """

    broker_name = "Redis"

    def __init__(
        self,
        hosts: list[str | dict[str, Any]] | None = None,
        cluster: bool = False,
        cluster_pubsub: str = "sharded",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(cluster, bool):
            raise TypeError(f"cluster must be True or False, got {cluster!r}")
        if cluster_pubsub not in CLUSTER_PUBSUB:
            raise TypeError(
                f"cluster_pubsub must be one of {', '.join(map(repr, CLUSTER_PUBSUB))}, "
                f"got {cluster_pubsub!r}"
            )
        if cluster_pubsub != "sharded" and not cluster:
            raise TypeError("cluster_pubsub applies to a Redis Cluster: set cluster=True as well")
        self.cluster = cluster
        self.cluster_pubsub = cluster_pubsub
        if hosts is None:
            hosts = ["redis://localhost:6379"]
        if isinstance(hosts, (str, dict)):
            raise TypeError(
                f"hosts must be a list of Redis addresses; pass a list: hosts=[{hosts!r}]"
            )
        if not isinstance(hosts, (list, tuple)) or not hosts:
            raise TypeError("hosts must be a non-empty list of redis:// URLs or dicts")
        for host in hosts:
            if not isinstance(host, (str, dict)):
                raise TypeError(
                    f"each entry of hosts must be a URL string or a dict, got {type(host).__name__}"
                )
            if is_sentinel_host(host):
                if cluster:
                    raise TypeError(
                        "cluster=True and a Sentinel entry in hosts do not go together: a Redis "
                        "Cluster fails over by itself (give its nodes' URLs), Sentinel watches "
                        "plain servers (use cluster=False)"
                    )
                check_sentinel_host(host)
        for host in hosts if cluster else ():
            if not isinstance(host, str) or not host.startswith(("redis://", "rediss://")):
                shown = redact_redis_url(host) if isinstance(host, str) else "a dict"
                raise TypeError(
                    f"with cluster=True, hosts must be redis:// or rediss:// URLs, got {shown!r}"
                )
        self.hosts = list(hosts)

    def make_transport(self, events: TransportEvents) -> Transport:
        if self.cluster:
            seeds = [str(host) for host in self.hosts]
            if self.cluster_pubsub == "classic":
                return ClusterRedisTransport(seeds, self.prefix, events)
            return ShardedClusterTransport(seeds, self.prefix, events)
        if len(self.hosts) == 1:
            return RedisTransport(self.hosts[0], self.prefix, events)
        return ShardedRedisTransport(
            [RedisTransport(host, self.prefix, events) for host in self.hosts]
        )


class NatsChannelLayer(NeffosChannelLayer):
    """Channel layer on NATS core subjects (one wildcard subscription per process).

    ``servers``: a ``nats://`` / ``tls://`` URL or a list of them (one cluster).
    ``connect_options``: keyword arguments for ``nats.connect`` — user/password, token, nkeys,
    ``user_credentials``, ``tls``, reconnect settings — merged over this layer's defaults
    (reconnect forever, 0.5 s between attempts).
    """

    broker_name = "NATS"

    def __init__(
        self,
        servers: str | list[str] | None = None,
        connect_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if servers is None:
            servers = ["nats://localhost:4222"]
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, (list, tuple)) or not servers:
            raise TypeError("servers must be a nats:// URL or a non-empty list of them")
        if not all(isinstance(server, str) for server in servers):
            raise TypeError(f"each of servers must be a URL string, got {servers!r}")
        if connect_options is not None and not isinstance(connect_options, dict):
            raise TypeError("connect_options must be a dict of nats.connect() keyword arguments")
        reserved = {"servers"} & set(connect_options or ())
        if reserved:
            raise TypeError(
                "put the server URLs in the layer's 'servers' option, not in connect_options"
            )
        self.servers = list(servers)
        self.connect_options = dict(connect_options or {})

    def make_transport(self, events: TransportEvents) -> Transport:
        return NatsTransport(self.servers, self.connect_options, events, self.prefix)
