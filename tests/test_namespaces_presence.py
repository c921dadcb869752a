"""Namespace and room presence (namespaces/presence.py) through real consumers, on Redis and NATS.

Two "instances" run in one event loop: consumers of ``ConsumerA`` use the layer ``default`` and
consumers of ``ConsumerB`` the layer ``other`` — two layer objects with their own pids, broker
connections and hubs. Clients are Channels' WebsocketCommunicator speaking the neffos protocol.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_neffos.namespaces import (
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    Message,
    Namespace,
    NeffosConsumer,
    counters,
    event,
    presence,
    presence_sync,
)
from channels_neffos.namespaces.groups import room_group
from channels_neffos.namespaces.protocol import parse
from channels_neffos.testing.conformance import LayerSpec
from tests import neffos_client


class Lobby(Namespace):
    name = "lobby"
    #: what ``presence()`` of the whole namespace said while ``on_leave`` ran
    seen_on_leave: list[list[str]] = []

    async def on_leave(self, room: str) -> None:
        self.seen_on_leave.append([entry["id"] for entry in await self.presence()])

    @event("who")
    async def who(self, message: Message) -> str:
        request = json.loads(message.text)
        return json.dumps(await self.presence(request["room"], by=request.get("by")))

    @event("rename")
    async def rename(self, message: Message) -> None:
        self.connection.presence_info = {**self.connection.presence_info, "name": message.text}

    @event("tag")
    async def tag(self, message: Message) -> None:
        self.connection.presence_info["tag"] = message.text  # in place


class Watched(Namespace):
    name = "watched"
    presence_events = True


class ConsumerA(NeffosConsumer):
    namespaces = [Lobby, Watched]

    async def on_handshake(self) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        self.presence_info = {key: values[0] for key, values in query.items()}


class ConsumerB(ConsumerA):
    channel_layer_alias = "other"


@pytest.fixture
def two_layers(spec: LayerSpec) -> Iterator[LayerSpec]:
    """``default`` and ``other``: the same broker, two layer objects (two instances)."""
    config = {"BACKEND": spec.backend, "CONFIG": spec.config}
    with override_settings(CHANNEL_LAYERS={"default": config, "other": config}):
        yield spec


class Client(neffos_client.Client):
    async def ok(self, text: str) -> None:
        answer = await self.request(text)
        assert answer.endswith(";;;;;;") or ";0;0;" in answer, answer

    async def join(self, room: str, namespace: str = "lobby") -> None:
        await self.ok(f"{namespace};{room};_OnRoomJoin;0;0;")

    async def leave(self, room: str, namespace: str = "lobby") -> None:
        await self.ok(f"{namespace};{room};_OnRoomLeave;0;0;")

    async def who(self, room: str, by: str | None = None) -> Any:
        body = json.dumps({"room": room, "by": by})
        answer = parse(await self.request(f"lobby;;who;0;0;{body}"))
        assert not answer.is_error, answer
        return json.loads(answer.text)


class Clients:
    """Opens clients on instance A or B; disconnects those still open at the end."""

    def __init__(self) -> None:
        self.opened: list[Client] = []

    async def open(
        self, instance: str, *rooms: str, query: str = "", namespace: str = "lobby"
    ) -> Client:
        consumer = ConsumerA if instance == "A" else ConsumerB
        communicator = WebsocketCommunicator(consumer.as_asgi(), f"/ws?{query}")
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_to(text_data="M")
        client = Client(communicator, (await communicator.receive_from())[1:])
        self.opened.append(client)
        await client.ok(f"{namespace};;_OnNamespaceConnect;0;0;")
        for room in rooms:
            await client.join(room, namespace)
        return client

    async def close(self, client: Client) -> None:
        self.opened.remove(client)
        await client.communicator.disconnect()


@pytest_asyncio.fixture
async def clients(two_layers: LayerSpec) -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    for client in list(clients.opened):
        await clients.close(client)
    for alias in ("default", "other"):  # in this loop: closing with the loop takes longer
        await channel_layers[alias].close()


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["id"] for entry in entries]


@pytest.mark.asyncio
async def test_members_of_a_room_and_of_the_namespace_on_every_instance_with_their_info(
    two_layers: LayerSpec, clients: Clients
) -> None:
    a1 = await clients.open("A", "r", query="user=1&name=ada")
    a2 = await clients.open("A", "r", query="user=2&name=bob")
    b1 = await clients.open("B", "r", query="user=3&name=cyd")
    b2 = await clients.open("B", query="user=4&name=dan")
    info = {
        a1.id: {"user": "1", "name": "ada"},
        a2.id: {"user": "2", "name": "bob"},
        b1.id: {"user": "3", "name": "cyd"},
        b2.id: {"user": "4", "name": "dan"},
    }
    in_room = [{"id": i, "info": info[i]} for i in sorted((a1.id, a2.id, b1.id))]
    everyone = [{"id": i, "info": info[i]} for i in sorted(info)]

    # From a namespace handler, on either instance (Namespace.presence)...
    for client in (a1, b2):
        assert await client.who("r") == in_room
        assert await client.who("") == everyone
        assert await client.who("elsewhere") == []
    # ...and from a third process (namespaces.server.presence).
    third = two_layers.build()
    try:
        assert await presence("lobby", "r", layer=third) == in_room
        assert await presence("lobby", layer=third) == everyone
        assert await presence("watched", layer=third) == []
    finally:
        await third.close()


@pytest.mark.asyncio
async def test_exact_as_soon_as_join_and_leave_return(
    two_layers: LayerSpec, clients: Clients
) -> None:
    observer = await clients.open("A")
    moving = [await clients.open("B", query=f"n={n}") for n in range(3)]
    inside: set[str] = set()
    for round_ in range(4):
        for client in moving:
            if round_ % 2 == 0:
                await client.join("room")
                inside.add(client.id)
            else:
                await client.leave("room")
                inside.discard(client.id)
            # No waiting of any kind between the answer to the request and the query.
            assert ids(await observer.who("room")) == sorted(inside)
            assert ids(await presence("lobby", "room")) == sorted(inside)


@pytest.mark.asyncio
async def test_by_user_counts_the_tabs_of_one_user_once(
    two_layers: LayerSpec, clients: Clients
) -> None:
    tab1 = await clients.open("A", "r", query="user=7&name=ada&tab=1")
    tab2 = await clients.open("B", "r", query="user=7&name=ada&tab=2")
    other = await clients.open("B", "r", query="user=8&name=bob")
    anonymous = [await clients.open(side, "r") for side in ("A", "B")]

    grouped = await tab1.who("r", by="user")
    expected = [
        {"key": "7", "ids": sorted((tab1.id, tab2.id))},
        {"key": "8", "ids": [other.id]},
        *({"key": None, "ids": [client.id]} for client in anonymous),
    ]
    expected.sort(key=lambda group: group["ids"][0])
    assert [{"key": g["key"], "ids": g["ids"]} for g in grouped] == expected
    first_tab = {"user": "7", "name": "ada", "tab": "1" if tab1.id < tab2.id else "2"}
    assert next(g for g in grouped if g["key"] == "7")["info"] == first_tab
    assert await presence("lobby", "r", by="user") == grouped
    assert len(await presence("lobby", "r")) == 5


@pytest.mark.asyncio
async def test_info_changes_show_at_once_in_every_scope(
    two_layers: LayerSpec, clients: Clients
) -> None:
    client = await clients.open("B", "r", query="user=1&name=old")
    observer = await clients.open("A")
    await client.ok("lobby;;rename;0;0;new")
    await client.ok("lobby;;tag;0;0;blue")
    expected = [{"id": client.id, "info": {"user": "1", "name": "new", "tag": "blue"}}]
    assert await observer.who("r") == expected
    assert [entry for entry in await observer.who("") if entry["id"] == client.id] == expected


@pytest.mark.asyncio
async def test_a_closing_connection_is_withdrawn_from_every_scope_before_any_hook_runs(
    two_layers: LayerSpec, clients: Clients
) -> None:
    leaving = await clients.open("A", "r1", "r2")
    staying = await clients.open("B", "r1")
    Lobby.seen_on_leave.clear()
    await clients.close(leaving)
    # Each on_leave ran with the connection already gone from the namespace, not only the room.
    assert Lobby.seen_on_leave == [[staying.id], [staying.id]]
    assert ids(await presence("lobby", "r1")) == [staying.id]
    assert ids(await presence("lobby", "r2")) == []
    assert ids(await presence("lobby")) == [staying.id]


@pytest.mark.asyncio
async def test_presence_sync_from_synchronous_code(two_layers: LayerSpec, clients: Clients) -> None:
    client = await clients.open("B", "r", query="name=ada")
    expected = [{"id": client.id, "info": {"name": "ada"}}]
    # A Django view under ASGI (sync_to_async: the call comes back to this loop)...
    assert await sync_to_async(presence_sync)("lobby", "r") == expected
    # ...and a thread with no event loop at all (a Celery task, a management command).
    assert await asyncio.to_thread(presence_sync, "lobby", "r", by="name") == [
        {"key": "ada", "ids": [client.id], "info": {"name": "ada"}}
    ]


@pytest.mark.asyncio
async def test_presence_events_tell_the_others_in_the_room_on_every_instance(
    two_layers: LayerSpec, clients: Clients
) -> None:
    watcher = await clients.open("A", "room", namespace="watched", query="name=w")
    comer = await clients.open("B", namespace="watched", query="name=c")
    await comer.join("room", "watched")
    joined = await watcher.frame()
    assert (joined.namespace, joined.room, joined.event) == ("watched", "room", PRESENCE_JOIN)
    assert json.loads(joined.text) == {"id": comer.id, "info": {"name": "c"}}
    assert await comer.nothing(), "the connection itself is not told"
    # Sent once the hub knows: presence queried on receipt already lists it.
    assert ids(await presence("watched", "room")) == sorted((watcher.id, comer.id))

    await comer.leave("room", "watched")
    left = await watcher.frame()
    assert (left.event, json.loads(left.text)["id"]) == (PRESENCE_LEAVE, comer.id)
    assert ids(await presence("watched", "room")) == [watcher.id]

    await comer.join("room", "watched")
    assert (await watcher.frame()).event == PRESENCE_JOIN
    await clients.close(comer)
    gone = await watcher.frame()
    assert (gone.event, json.loads(gone.text)["id"]) == (PRESENCE_LEAVE, comer.id)

    # A namespace without presence_events sends none.
    quiet = await clients.open("A", "room")
    await clients.open("B", "room")
    assert await quiet.nothing()


@pytest.mark.asyncio
async def test_a_hub_that_does_not_answer_is_left_out_unless_it_left_meanwhile(
    two_layers: LayerSpec, clients: Clients
) -> None:
    layer = get_channel_layer()
    real = await clients.open("A", "slow", "quick")
    # Group members that never read their channel, as a wedged (or much older) process would.
    silent = await layer.new_channel("neffos.hub")
    leaving = await layer.new_channel("neffos.hub")
    await layer.group_add(room_group("lobby", "slow"), silent)
    await layer.group_add(room_group("lobby", "quick"), leaving)
    before = counters["presence_timeout"]

    async def discard_soon() -> None:
        await asyncio.sleep(0.5)
        await layer.group_discard(room_group("lobby", "quick"), leaving)

    results = await asyncio.gather(
        presence("lobby", "slow"), presence("lobby", "quick"), discard_soon()
    )
    assert [ids(results[0]), ids(results[1])] == [[real.id], [real.id]]
    assert counters["presence_timeout"] == before + 1, "only the hub still in its group"
    await layer.group_discard(room_group("lobby", "slow"), silent)


def test_presence_info_must_be_a_json_able_dict_with_str_keys() -> None:
    consumer = ConsumerA()
    assert consumer.presence_info == {}
    for wrong in (["user"], {1: "x"}, {"raw": b"\x00"}, {"set": {1}}):
        with pytest.raises(TypeError):
            consumer.presence_info = wrong  # type: ignore[assignment]
    consumer.presence_info = {"user": 1, "roles": ["a"], "away": None}
    assert consumer.presence_info == {"user": 1, "roles": ["a"], "away": None}
    assert ConsumerA().presence_info == {}, "each connection has its own"
