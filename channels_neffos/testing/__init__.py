"""Test support for channels_neffos and for anyone writing a channel layer.

* :mod:`.brokers` — start private ``redis-server`` / ``nats-server`` processes on free ports.
* :mod:`.plugin` — pytest fixtures for them (auto-loaded when channels_neffos is installed).
* :mod:`.nats_auth` — NKeys, operator-mode JWTs and ``.creds`` files for ``NatsServer``.
* :mod:`.tls` — throwaway certificates (a ``trustme`` CA) for TLS and mutual-TLS tests.
* :mod:`.conformance` — a reusable suite of channel-layer behaviour, parametrised over a
  :class:`~.conformance.LayerSpec`; subclass :class:`~.conformance.ChannelLayerConformance`.
"""

from .brokers import BrokerBinaryMissing, BrokerProcess, NatsServer, RedisServer, free_port

__all__ = ["BrokerBinaryMissing", "BrokerProcess", "NatsServer", "RedisServer", "free_port"]
