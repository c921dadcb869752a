"""Prometheus metrics of the channel layers and namespaces in this OS process.

Needs ``prometheus_client`` (``pip install channels-neffos[prometheus]``). Every scrape reads
fresh snapshots (:meth:`NeffosChannelLayer.stats() <channels_neffos.NeffosChannelLayer.stats>`
of each layer Channels has built, and the namespaces' connection counts): nothing is
recorded twice, and a layer costs nothing between scrapes. Serve them with

* :func:`metrics_view` — a Django view: ``path("metrics", metrics_view)`` in ``urls.py``;
* :data:`metrics_app` — an ASGI application, e.g. mounted in front of Django in ``asgi.py``
  (see ``docs/operations.rst``);
* or add :class:`NeffosCollector` to a registry you already expose:
  ``prometheus_client.REGISTRY.register(NeffosCollector())``.

Metrics (label ``alias`` is the ``CHANNEL_LAYERS`` alias; a ``MultiChannelLayer``'s brokers add
``broker``):

==========================================  =========  ============================================
``channels_neffos_messages_published``      counter    messages handed to the broker
``channels_neffos_messages_received``       counter    messages that arrived from the broker
``channels_neffos_dropped``                 counter    drops, by ``reason`` (``layer.counters``)
``channels_neffos_connection_lost``         counter    broker connections lost
``channels_neffos_reconnects``              counter    broker connections restored
``channels_neffos_broker_connected``        gauge      1 if every layer process is connected
``channels_neffos_mailbox_messages``        gauge      messages waiting in mailboxes
``channels_neffos_channels``                gauge      channels with a mailbox in this process
``channels_neffos_groups``                  gauge      groups with members in this process
``channels_neffos_ask_seconds``             histogram  seconds to the answer of each answered ask
``channels_neffos_websocket_connections``   gauge      neffos connections, by ``namespace``
``channels_neffos_namespace_events``        counter    namespaces' counted events, by ``event``
                                                       (``slow_client_closed``, ...)
==========================================  =========  ============================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .channel_layer import NeffosChannelLayer
from .multi import MultiChannelLayer
from .namespaces.hub import connection_counts
from .namespaces.outgoing import counters as namespace_counters
from .stats import LayerStats

#: Counters of ``layer.counters`` that are connection events, not drops.
_CONNECTION_EVENTS = ("connection_lost", "connection_restored")


def _layers() -> Iterator[tuple[dict[str, str], NeffosChannelLayer]]:
    """(labels, layer) for each channels_neffos layer Channels has built in this process."""
    from channels.layers import channel_layers

    for alias, layer in list(channel_layers.backends.items()):
        if isinstance(layer, MultiChannelLayer):
            for child in layer.children:
                yield {"alias": alias, "broker": type(child).broker_name}, child
        elif isinstance(layer, NeffosChannelLayer):
            yield {"alias": alias, "broker": type(layer).broker_name}, layer


class NeffosCollector:
    """A prometheus_client collector of the metrics listed in the module docstring."""

    def collect(self) -> Iterator[Metric]:
        labels = ["alias", "broker"]
        published = CounterMetricFamily(
            "channels_neffos_messages_published", "Messages handed to the broker.", labels=labels
        )
        received = CounterMetricFamily(
            "channels_neffos_messages_received",
            "Messages that arrived from the broker.",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "channels_neffos_dropped", "Messages dropped, by reason.", labels=[*labels, "reason"]
        )
        lost = CounterMetricFamily(
            "channels_neffos_connection_lost", "Broker connections lost.", labels=labels
        )
        reconnects = CounterMetricFamily(
            "channels_neffos_reconnects", "Broker connections restored.", labels=labels
        )
        connected = GaugeMetricFamily(
            "channels_neffos_broker_connected",
            "1 if every layer process is connected to its broker.",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "channels_neffos_mailbox_messages", "Messages waiting in mailboxes.", labels=labels
        )
        channels = GaugeMetricFamily(
            "channels_neffos_channels", "Channels with a mailbox here.", labels=labels
        )
        groups = GaugeMetricFamily(
            "channels_neffos_groups", "Groups with members here.", labels=labels
        )
        asks = HistogramMetricFamily(
            "channels_neffos_ask_seconds", "Seconds to the answer of an ask.", labels=labels
        )
        for label_map, layer in _layers():
            values = [label_map["alias"], label_map["broker"]]
            stats: LayerStats = layer.stats()
            processes = stats.processes
            published.add_metric(values, sum(p.published for p in processes))
            received.add_metric(values, sum(p.received for p in processes))
            for reason, count in sorted(stats.counters.items()):
                if reason not in _CONNECTION_EVENTS:
                    dropped.add_metric([*values, reason], count)
            lost.add_metric(values, stats.counters.get("connection_lost", 0))
            reconnects.add_metric(values, stats.counters.get("connection_restored", 0))
            connected.add_metric(values, 1 if all(p.connected for p in processes) else 0)
            queued.add_metric(values, sum(p.queued for p in processes))
            channels.add_metric(values, sum(p.channels for p in processes))
            groups.add_metric(values, sum(p.groups for p in processes))
            latency = stats.ask_latency
            asks.add_metric(
                values,
                [(_bound(bound), count) for bound, count in latency["buckets"]],
                latency["sum"],
            )
        yield from (published, received, dropped, lost, reconnects, connected, queued)
        yield from (channels, groups, asks)
        yield from _namespace_metrics()


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _namespace_metrics() -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "channels_neffos_websocket_connections",
        "neffos WebSocket connections in this process, by namespace.",
        labels=["namespace"],
    )
    for namespace, count in sorted(connection_counts().items()):
        connections.add_metric([namespace], count)
    events = CounterMetricFamily(
        "channels_neffos_namespace_events",
        "Events the namespaces counted (slow clients closed, frames dropped...).",
        labels=["event"],
    )
    for event, count in sorted(dict(namespace_counters).items()):
        events.add_metric([event], count)
    yield connections
    yield events


#: A registry holding only :class:`NeffosCollector`, served by :func:`metrics_view` and
#: :data:`metrics_app`.
registry = CollectorRegistry(auto_describe=False)
registry.register(NeffosCollector())

#: An ASGI application that serves the metrics (any path).
metrics_app = make_asgi_app(registry)


def metrics_view(request: Any) -> Any:
    """A Django view serving the metrics in Prometheus' text format."""
    from django.http import HttpResponse

    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
