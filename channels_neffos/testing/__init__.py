"""Test support for projects that use channels_neffos, and for anyone writing a channel layer.

* :mod:`.memory` — an in-memory broker and :class:`~.memory.MemoryChannelLayer`: the layers'
  semantics with no Redis or NATS, inside one OS process (fast unit tests).
* :mod:`.brokers` — start private ``redis-server`` / ``nats-server`` processes (and a Redis
  Cluster) on free ports, to kill and restart as a test likes.
* :mod:`.plugin` — pytest fixtures for those brokers, for projects that opt in
  (``pytest_plugins = ["channels_neffos.testing.plugin"]``); nothing loads by itself.
* :mod:`.conformance` — a reusable suite of channel-layer behaviour, parametrised over a
  :class:`~.conformance.LayerSpec`; subclass :class:`~.conformance.ChannelLayerConformance`.
"""

from .brokers import BrokerBinaryMissing, BrokerProcess, NatsServer, RedisServer, free_port

__all__ = ["BrokerBinaryMissing", "BrokerProcess", "NatsServer", "RedisServer", "free_port"]
