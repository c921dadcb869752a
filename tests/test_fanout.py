"""Process-level fan-out (namespaces/hub.py) through real consumers, on Redis, NATS and the bridge.

Clients here are Channels' WebsocketCommunicator speaking the neffos protocol; "another
instance" is a second layer object (its own pid and broker connection) in the same loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_neffos.namespaces import Message, Namespace, NeffosConsumer, counters, event
from channels_neffos.namespaces import consumer as consumer_module
from channels_neffos.namespaces import server as neffos_server
from channels_neffos.namespaces.groups import namespace_group, room_group
from channels_neffos.namespaces.hub import hub_for
from channels_neffos.testing.conformance import LayerSpec
from tests.neffos_client import Client


class Shout(Namespace):
    name = "shout"
    hooks: list[str] = []

    async def on_join(self, room: str) -> None:
        self.hooks.append(f"join {room}")

    @event("say")
    async def say(self, message: Message) -> None:
        await self.broadcast("said", message.body, room=message.room)

    @event("say-all")
    async def say_all(self, message: Message) -> None:
        await self.broadcast("said", message.body, include_self=True)


class Consumer(NeffosConsumer):
    namespaces = [Shout]


@pytest.fixture(params=["redis", "nats", "multi"])
def any_spec(request: pytest.FixtureRequest) -> Iterator[LayerSpec]:
    spec: LayerSpec = request.getfixturevalue(f"{request.param}_spec")
    layers = {"default": {"BACKEND": spec.backend, "CONFIG": spec.config}}
    with override_settings(CHANNEL_LAYERS=layers):
        yield spec


async def connect(rooms: tuple[str, ...] = ()) -> Client:
    communicator = WebsocketCommunicator(Consumer.as_asgi(), "/ws")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="M")
    ack = await communicator.receive_from()
    client = Client(communicator, ack[1:])
    assert await client.request("shout;;_OnNamespaceConnect;0;0;") == f"${client._wait};;;;;;"
    for room in rooms:
        assert (await client.request(f"shout;{room};_OnRoomJoin;0;0;")).endswith(";;;;;;")
    return client


class Clients:
    """Opens clients and disconnects them all at the end of the test."""

    def __init__(self) -> None:
        self.opened: list[Client] = []

    async def open(self, *rooms: str) -> Client:
        client = await connect(rooms)
        self.opened.append(client)
        return client


@pytest_asyncio.fixture
async def clients(any_spec: LayerSpec) -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    for client in clients.opened:
        await client.communicator.disconnect()


def local_members(group: str) -> dict[str, float]:
    layer: Any = get_channel_layer()
    children = getattr(layer, "children", [layer])
    process = children[0]._routers[asyncio.get_running_loop()]
    members: dict[str, float] = process.groups.members.get(group, {})
    return members


@pytest.mark.asyncio
async def test_a_process_is_one_group_member_however_many_clients(
    any_spec: LayerSpec, clients: Clients
) -> None:
    in_room = [await clients.open("lobby") for _ in range(5)]
    outside = await clients.open()
    members = local_members(room_group("shout", "lobby"))
    assert len(members) == 1 and next(iter(members)).startswith("neffos.hub.")
    assert list(local_members(namespace_group("shout"))) == list(members)

    other_instance = any_spec.build()
    await neffos_server.broadcast("shout", "news", "hi", room="lobby", layer=other_instance)
    for client in in_room:
        assert await client.frame() == Message("shout", "lobby", "news", "hi")
    assert await outside.nothing(), "the write check: not in the room"
    for client in in_room:
        assert await client.nothing(), "exactly once"
    await other_instance.close()


@pytest.mark.asyncio
async def test_the_sender_is_excluded_on_every_instance(
    any_spec: LayerSpec, clients: Clients
) -> None:
    sender, here = await clients.open("r"), await clients.open("r")
    await sender.emit("shout;r;say;0;0;from me")
    assert await here.frame() == Message("shout", "r", "said", "from me")
    assert await sender.nothing()
    await sender.emit("shout;;say-all;0;0;to all")
    for client in (sender, here):
        assert await client.frame() == Message("shout", "", "said", "to all")

    # A broadcast that names an exclusion, from another process, is honoured by this one.
    other_instance = any_spec.build()
    await neffos_server.broadcast(
        "shout", "x", "y", room="r", exclude=here.id, layer=other_instance
    )
    assert (await sender.frame()).event == "x"
    assert await here.nothing()
    await other_instance.close()


@pytest.mark.asyncio
async def test_leaving_stops_delivery_and_the_hub_stops_with_its_last_member(
    any_spec: LayerSpec,
) -> None:
    layer = get_channel_layer()
    first, second = await connect(("r",)), await connect(("r",))
    hub = hub_for(layer)
    assert set(hub.members) == {("shout", ""), ("shout", "r")}
    assert (await first.request("shout;r;_OnRoomLeave;0;0;")).endswith(";;;;;;")
    await neffos_server.broadcast("shout", "e", "b", room="r", layer=layer)
    assert (await second.frame()).event == "e"
    assert await first.nothing()
    for client in (first, second):
        await client.communicator.disconnect()
    await asyncio.sleep(0.05)
    assert hub.members == {}
    assert not local_members(room_group("shout", "r"))
    channel = hub._channel
    assert not (channel.succeeded or channel.running), "the hub's channel outlived its members"
    assert hub._tasks == [], "no task outlives the last connection"


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the consumer's database-connection hops (each still runs the real one)."""
    counted: list[int] = []
    real_hop = consumer_module.aclose_old_connections

    async def counted_hop() -> None:
        counted.append(1)
        await real_hop()

    monkeypatch.setattr(consumer_module, "aclose_old_connections", counted_hop)
    return counted


@pytest.mark.asyncio
async def test_only_user_code_takes_the_database_hop(
    any_spec: LayerSpec, clients: Clients, hops: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with a real database (overriding DATABASES in a running test is unsupported by Django).
    monkeypatch.setattr(consumer_module, "_databases_configured", lambda: True)
    listener, talker = await clients.open(), await clients.open()
    hops.clear()
    assert (await listener.request("shout;r;_OnRoomJoin;0;0;")).endswith(";;;;;;")
    assert len(hops) == 1, "on_join is user code"
    other_instance = any_spec.build()
    for index in range(20):
        await neffos_server.broadcast("shout", "n", str(index), room="r", layer=other_instance)
    for index in range(20):
        assert (await listener.frame()).body == str(index)
    await neffos_server.send_to(listener.id, "shout", "dm", "psst", layer=other_instance)
    assert (await listener.frame()).body == "psst"
    assert len(hops) == 1, "frames, broadcasts and send_to frames run no hop"
    await talker.emit("shout;r;say;0;0;hello")
    assert (await listener.frame()).body == "hello"
    assert len(hops) == 2, "one hop for the event handler"
    await other_instance.close()


@pytest.mark.asyncio
async def test_without_a_database_nothing_takes_the_hop(
    any_spec: LayerSpec, clients: Clients, hops: list[int]
) -> None:
    talker, listener = await clients.open("r"), await clients.open("r")
    await talker.emit("shout;r;say;0;0;hello")
    assert (await listener.frame()).body == "hello"
    assert hops == [], "no DATABASES: close_old_connections() would have nothing to close"


@pytest.mark.asyncio
async def test_other_message_types_sent_to_a_namespace_group_are_dropped_and_logged(
    any_spec: LayerSpec, clients: Clients
) -> None:
    client = await clients.open("r")
    layer = get_channel_layer()
    before = counters["not_a_frame"]
    await layer.group_send(room_group("shout", "r"), {"type": "app.custom"})
    await neffos_server.broadcast("shout", "after", "", room="r", layer=layer)
    assert (await client.frame()).event == "after"
    assert counters["not_a_frame"] == before + 1
