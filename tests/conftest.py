from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.test import override_settings
from hypothesis import settings as hypothesis_settings

from channels_neffos.testing.brokers import BrokerProcess, RedisCluster
from channels_neffos.testing.conformance import LayerSpec, unique_prefix

# Property tests draw the same examples on every run, so a failure in CI is one a rerun sees;
# HYPOTHESIS_PROFILE=explore draws new ones (and keeps failures in .hypothesis/) when hunting.
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


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
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": redis_cluster.urls, "cluster": True, "prefix": unique_prefix()},
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
