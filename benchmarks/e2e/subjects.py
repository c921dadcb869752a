"""The subjects of the end-to-end benchmark, in the order they run, and the two servers.

* (i) ``raw`` — the raw ASGI app (apps.raw): the physical limit of writing frames;
* (ii) plain Channels chat (consumers.PlainChatConsumer) on each channel layer: the peers users
  pick today (channels_redis pubsub and core, channels-nats) and our two layers; every layer
  runs with its default options (capacity included: drops are part of what users see);
* (iii) ``ns-redis``/``ns-nats`` — our neffos namespaces (consumers.BenchNeffosConsumer) with
  the real neffos.js client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVERS = ("daphne", "uvicorn")

RAW = "raw ASGI"
NS_REDIS = "channels_neffos namespaces Redis"
NS_NATS = "channels_neffos namespaces NATS"


@dataclass(frozen=True)
class Subject:
    key: str  # the name on the command line (--subjects)
    name: str  # the name in results and plots
    mode: str  # what the Node clients speak: "raw", "plain" (ws) or "neffos" (neffos.js)
    broker: str | None = None  # "redis" or "nats"; None: no broker
    backend: str | None = None  # the channel layer's class path
    peer: bool = False  # a plain-Channels layer that is not ours: the "5x best peer" target

    @property
    def app(self) -> str:
        return "benchmarks.e2e.apps:" + ("raw" if self.mode == "raw" else "channels")

    def layer(self, broker_url: str) -> dict[str, Any]:
        """``CHANNEL_LAYERS["default"]`` with the broker at ``broker_url``, else defaults."""
        assert self.backend is not None and self.broker is not None
        if self.backend.startswith("channels_neffos."):
            key = "hosts" if self.broker == "redis" else "servers"
            config: dict[str, Any] = {key: [broker_url], "prefix": "bench"}
        elif self.broker == "redis":
            config = {"hosts": [broker_url]}
        else:
            config = {"servers": [broker_url]}
        return {"BACKEND": self.backend, "CONFIG": config}


SUBJECTS = [
    Subject("raw", RAW, "raw"),
    Subject(
        "redis-pubsub",
        "channels_redis pubsub",
        "plain",
        "redis",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
        peer=True,
    ),
    Subject(
        "redis-core",
        "channels_redis core",
        "plain",
        "redis",
        "channels_redis.core.RedisChannelLayer",
        peer=True,
    ),
    Subject(
        "channels-nats",
        "channels-nats",
        "plain",
        "nats",
        "channels_nats.NatsChannelLayer",
        peer=True,
    ),
    Subject(
        "neffos-redis",
        "channels_neffos Redis (Channels chat)",
        "plain",
        "redis",
        "channels_neffos.RedisChannelLayer",
    ),
    Subject(
        "neffos-nats",
        "channels_neffos NATS (Channels chat)",
        "plain",
        "nats",
        "channels_neffos.NatsChannelLayer",
    ),
    Subject("ns-redis", NS_REDIS, "neffos", "redis", "channels_neffos.RedisChannelLayer"),
    Subject("ns-nats", NS_NATS, "neffos", "nats", "channels_neffos.NatsChannelLayer"),
]
