"""pytest plugin (registered as ``channels_neffos``): broker-process fixtures.

* ``redis_server`` / ``nats_server`` — one private server per test session, shared by tests that
  isolate themselves with a unique ``prefix`` (see :func:`unique_prefix`).
* ``second_redis_server`` — another session-wide Redis, for layers sharded over two servers.
* ``redis_cluster`` — a session-wide Redis Cluster of three primaries (``.urls``).
* ``fresh_redis_server`` / ``fresh_nats_server`` — one private server per test, for tests that
  kill and restart the broker.
* ``nats_cluster`` / ``fresh_nats_cluster`` — three routed nats-servers with clustered JetStream
  (:class:`~channels_neffos.testing.nats_cluster.NatsCluster`: ``.urls``, ``.kill(i)``,
  ``.restart(i)``), per session / per test.
* ``redis_sentinel`` / ``fresh_redis_sentinel`` — a master, a replica and three sentinels
  (:class:`~channels_neffos.testing.redis_sentinel.RedisSentinelGroup`), per session / per test.

Each fixture yields a :class:`~channels_neffos.testing.brokers.BrokerProcess` (``.url``,
``.kill()``, ``.restart()``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .brokers import BrokerProcess, NatsServer, RedisCluster, RedisServer
from .nats_cluster import NatsCluster

if TYPE_CHECKING:
    from .redis_sentinel import RedisSentinelGroup


@pytest.fixture(scope="session")
def redis_server() -> Iterator[BrokerProcess]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def second_redis_server() -> Iterator[BrokerProcess]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def nats_server() -> Iterator[BrokerProcess]:
    with NatsServer() as server:
        yield server


@pytest.fixture
def fresh_redis_server() -> Iterator[BrokerProcess]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[BrokerProcess]:
    with NatsServer() as server:
        yield server


# -- Redis Sentinel ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A session-wide master + replica + three sentinels; never failed over (use the fresh one)."""
    from .redis_sentinel import RedisSentinelGroup

    with RedisSentinelGroup() as group:
        yield group


@pytest.fixture
def fresh_redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A master + replica + three sentinels of this test's own, to kill or fail over."""
    from .redis_sentinel import RedisSentinelGroup

    with RedisSentinelGroup() as group:
        yield group


# -- NATS cluster --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """A session-wide cluster of three NATS nodes; never killed (use the fresh one for that)."""
    with NatsCluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_nats_cluster() -> Iterator[NatsCluster]:
    """A cluster of three NATS nodes of this test's own, to kill and restart nodes of."""
    with NatsCluster() as cluster:
        yield cluster
