"""Prometheus metrics (channels_neffos.metrics), the messages_dropped signal and stats() counts,
on real brokers, through the Django view and the ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from channels_neffos import RedisChannelLayer
from channels_neffos.metrics import metrics_app, metrics_view
from channels_neffos.namespaces import Namespace, NeffosConsumer
from channels_neffos.signals import messages_dropped
from channels_neffos.testing.conformance import LayerSpec


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of the Django view's response: {(name, sorted labels): value}."""
    response = metrics_view(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def configured(redis_spec: LayerSpec) -> Iterator[LayerSpec]:
    layers = {"default": {"BACKEND": redis_spec.backend, "CONFIG": redis_spec.config}}
    with override_settings(CHANNEL_LAYERS=layers):
        yield redis_spec


@pytest.mark.asyncio
async def test_layer_metrics_and_the_drop_signal(configured: LayerSpec) -> None:
    layer = get_channel_layer()
    peer = RedisChannelLayer(**configured.config)
    reports: list[dict[str, Any]] = []

    def on_dropped(sender: type, **details: Any) -> None:
        reports.append(details)

    messages_dropped.connect(on_dropped, weak=False)
    try:
        mine, theirs = await layer.new_channel(), await peer.new_channel()
        await layer.group_add("room", mine)
        for n in range(3):
            await peer.send(mine, {"type": "in", "n": n})
        for _ in range(3):
            await asyncio.wait_for(layer.receive(mine), 5)
        await layer.send(theirs, {"type": "out"})
        await asyncio.wait_for(peer.receive(theirs), 5)

        async def answer() -> None:
            request = await peer.receive(theirs)
            await peer.reply(request, {"type": "answer"})

        answering = asyncio.ensure_future(answer())
        assert (await layer.ask(theirs, {"type": "question"}))["type"] == "answer"
        await answering
        for _ in range(layer.capacity + 2):  # two over capacity: dropped, counted, signalled
            await peer.send(mine, {"type": "flood"})
        deadline = asyncio.get_running_loop().time() + 5
        while layer.counters["channel_full"] < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)

        samples = await asyncio.to_thread(scrape)  # as a server's thread would
        labels = {"alias": "default", "broker": "Redis"}
        assert value(samples, "channels_neffos_messages_received_total", **labels) >= 3 + 102
        assert value(samples, "channels_neffos_messages_published_total", **labels) >= 2
        assert value(samples, "channels_neffos_dropped_total", reason="channel_full", **labels) == 2
        assert value(samples, "channels_neffos_broker_connected", **labels) == 1
        assert value(samples, "channels_neffos_mailbox_messages", **labels) == layer.capacity
        assert value(samples, "channels_neffos_groups", **labels) == 1
        assert value(samples, "channels_neffos_ask_seconds_count", **labels) == 1
        assert value(samples, "channels_neffos_ask_seconds_bucket", le="+Inf", **labels) == 1
        # The signal: the first drop of a reason at once, the rest in the next report.
        assert [(r["reason"], r["count"], r["layer"]) for r in reports] == [
            ("channel_full", 1, layer)
        ]
        assert mine in reports[0]["where"]
    finally:
        messages_dropped.disconnect(on_dropped)
        await peer.close()
        await layer.close()


class Room(Namespace):
    name = "room"


class Consumer(NeffosConsumer):
    namespaces = [Room]


@pytest.mark.asyncio
async def test_websocket_connections_by_namespace_and_the_asgi_app(configured: LayerSpec) -> None:
    communicators = []
    try:
        for _ in range(3):
            communicator = WebsocketCommunicator(Consumer.as_asgi(), "/ws")
            assert (await communicator.connect())[0]
            await communicator.send_to(text_data="M")
            await communicator.receive_from()
            await communicator.send_to(text_data="$1;room;;_OnNamespaceConnect;0;0;")
            await communicator.receive_from()
            communicators.append(communicator)
        samples = scrape()
        assert value(samples, "channels_neffos_websocket_connections", namespace="room") == 3
        await communicators.pop().disconnect()
        await asyncio.sleep(0.1)
        assert value(scrape(), "channels_neffos_websocket_connections", namespace="room") == 2

        app = ApplicationCommunicator(
            metrics_app,
            {
                "type": "http",
                "method": "GET",
                "path": "/metrics",
                "headers": [],
                "query_string": b"",
            },
        )
        await app.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await app.receive_output(5)
        assert start["status"] == 200
        body = (await app.receive_output(5))["body"].decode()
        assert 'channels_neffos_websocket_connections{namespace="room"} 2.0' in body
    finally:
        for communicator in communicators:
            await communicator.disconnect()
        await get_channel_layer().close()
