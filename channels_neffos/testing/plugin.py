"""pytest plugin (registered as ``channels_neffos``): broker-process fixtures.

* ``redis_server`` / ``nats_server`` — one private server per test session, shared by tests that
  isolate themselves with a unique ``prefix`` (see :func:`unique_prefix`).
* ``second_redis_server`` — another session-wide Redis, for layers sharded over two servers.
* ``redis_cluster`` — a session-wide Redis Cluster of three primaries (``.urls``).
* ``fresh_redis_server`` / ``fresh_nats_server`` — one private server per test, for tests that
  kill and restart the broker.

Each fixture yields a :class:`~channels_neffos.testing.brokers.BrokerProcess` (``.url``,
``.kill()``, ``.restart()``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .brokers import BrokerProcess, NatsServer, RedisCluster, RedisServer


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
