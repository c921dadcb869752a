from __future__ import annotations

import pytest

from channels_neffos.testing.brokers import BrokerProcess
from channels_neffos.testing.conformance import LayerSpec, unique_prefix


@pytest.fixture
def redis_spec(redis_server: BrokerProcess) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.RedisChannelLayer",
        {"hosts": [redis_server.url], "prefix": unique_prefix()},
    )


@pytest.fixture
def nats_spec(nats_server: BrokerProcess) -> LayerSpec:
    return LayerSpec(
        "channels_neffos.NatsChannelLayer",
        {"servers": [nats_server.url], "prefix": unique_prefix()},
    )
