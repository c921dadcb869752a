"""What the benchmarks measure: our two layers, the layers users pick today, and raw clients.

Layers are described by a :class:`LayerSpec` (backend path + config) so that a workload can also
build them in other OS processes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from channels_neffos.testing.conformance import LayerSpec

#: Large enough that no benchmark ever meets ChannelFull: we measure speed, not back-pressure.
CAPACITY = 1_000_000

NEFFOS_REDIS = "channels_neffos Redis"
NEFFOS_NATS = "channels_neffos NATS"
CHANNELS_REDIS_CORE = "channels_redis core"
CHANNELS_REDIS_PUBSUB = "channels_redis pubsub"
CHANNELS_NATS = "channels-nats"


@dataclass(frozen=True)
class Subject:
    name: str
    broker: str  # "redis" or "nats"
    spec: LayerSpec
    ours: bool = False


def layer_subjects(redis_url: str, nats_url: str, prefix: str = "bench") -> list[Subject]:
    subjects = [
        Subject(
            NEFFOS_REDIS,
            "redis",
            LayerSpec(
                "channels_neffos.RedisChannelLayer",
                {"hosts": [redis_url], "capacity": CAPACITY, "prefix": prefix},
            ),
            ours=True,
        ),
        Subject(
            NEFFOS_NATS,
            "nats",
            LayerSpec(
                "channels_neffos.NatsChannelLayer",
                {"servers": [nats_url], "capacity": CAPACITY, "prefix": prefix},
            ),
            ours=True,
        ),
    ]
    if importlib.util.find_spec("channels_redis") is not None:
        subjects += [
            Subject(
                CHANNELS_REDIS_CORE,
                "redis",
                LayerSpec(
                    "channels_redis.core.RedisChannelLayer",
                    {"hosts": [redis_url], "capacity": CAPACITY, "prefix": prefix},
                ),
            ),
            Subject(
                CHANNELS_REDIS_PUBSUB,
                "redis",
                LayerSpec("channels_redis.pubsub.RedisPubSubChannelLayer", {"hosts": [redis_url]}),
            ),
        ]
    if importlib.util.find_spec("channels_nats") is not None:
        subjects.append(
            Subject(
                CHANNELS_NATS,
                "nats",
                LayerSpec(
                    "channels_nats.NatsChannelLayer",
                    {"servers": [nats_url], "capacity": CAPACITY, "prefix": prefix},
                ),
            )
        )
    return subjects
