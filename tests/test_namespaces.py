"""NeffosConsumer at the frame level, through Channels' WebsocketCommunicator, on both layers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from channels.testing import WebsocketCommunicator

from channels_neffos.exceptions import AskError
from channels_neffos.namespaces import Message, Namespace, NeffosConsumer, Reject, event
from channels_neffos.namespaces import server as neffos_server
from channels_neffos.namespaces.protocol import parse, serialize
from channels_neffos.testing.conformance import LayerSpec


class Room(Namespace):
    name = "room"

    async def on_join(self, room: str) -> None:
        if room == "vip":
            raise Reject("members only")

    @event
    async def echo(self, message: Message) -> str:
        return message.text.upper()

    @event("silent")
    async def silent(self, message: Message) -> None:
        return None

    @event("crash")
    async def crash(self, message: Message) -> None:
        raise RuntimeError("secret internals")

    @event("ask-back")
    async def ask_back(self, message: Message) -> str | bytes:
        return await self.ask("question", "what?", timeout=2)

    @event("pull-in")
    async def pull_in(self, message: Message) -> str:
        await self.join("forced")
        return ",".join(sorted(self.rooms))


class Consumer(NeffosConsumer):
    namespaces = [Room]

    async def on_handshake(self) -> None:
        if b"deny" in self.scope.get("query_string", b""):
            raise Reject("go away")


async def open_client(query: str = "") -> WebsocketCommunicator:
    client = WebsocketCommunicator(Consumer.as_asgi(), f"/ws?{query}")
    connected, _ = await client.connect()
    assert connected
    await client.send_to(text_data="M")
    return client


@pytest_asyncio.fixture
async def client(spec: LayerSpec) -> AsyncIterator[WebsocketCommunicator]:
    client = await open_client()
    ack = await client.receive_from()
    assert ack.startswith("A")
    client.connection_id = ack[1:]  # type: ignore[attr-defined]
    await client.send_to(text_data="$1;room;;_OnNamespaceConnect;0;0;")
    assert await client.receive_from() == "$1;;;;;;"
    yield client
    await client.disconnect()


async def frame(client: WebsocketCommunicator) -> Message:
    return parse(await client.receive_from(timeout=3))


@pytest.mark.asyncio
async def test_handshake_can_be_refused(spec: LayerSpec) -> None:
    client = await open_client("deny=1")
    assert await client.receive_from() == "Hgo away"
    assert (await client.receive_output())["type"] == "websocket.close"


@pytest.mark.asyncio
async def test_malformed_frame_gets_an_error_and_the_connection_lives_on(
    client: WebsocketCommunicator,
) -> None:
    await client.send_to(text_data="this is not neffos")
    error = await frame(client)
    assert error.is_error and "invalid payload" in error.text
    await client.send_to(text_data="$2;room;;echo;0;0;still here")
    assert await client.receive_from() == "$2;room;;echo;0;0;STILL HERE"


@pytest.mark.asyncio
async def test_a_handler_failing_on_every_frame_logs_one_traceback_not_one_per_frame(
    client: WebsocketCommunicator, caplog: pytest.LogCaptureFixture
) -> None:
    from channels_neffos.namespaces import counters

    before = counters["handler_failed"]
    with caplog.at_level(logging.DEBUG, logger="channels_neffos"):
        for number in range(50):
            await client.send_to(text_data=f"${number + 10};room;;crash;0;0;")
            assert (await frame(client)).text == "internal server error"
    assert counters["handler_failed"] - before == 50
    failures = [r for r in caplog.records if "neffos handler" in r.getMessage()]
    assert len(failures) <= 1  # one per handler per 10 s (none if an earlier test logged it)
    assert all(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in failures)


@pytest.mark.asyncio
async def test_events_answers_errors(client: WebsocketCommunicator) -> None:
    await client.send_to(text_data="$3;room;;silent;0;0;")
    assert await client.receive_from() == "$3;room;;silent;0;0;"  # empty answer, never a hang
    await client.send_to(text_data="$4;room;;crash;0;0;")
    crashed = await frame(client)
    assert crashed.is_error and crashed.text == "internal server error"
    await client.send_to(text_data="$5;room;;nope;0;0;")
    assert (await frame(client)).text == "unknown event 'nope'"
    await client.send_to(text_data="$6;other;;echo;0;0;")
    assert (await frame(client)).text == "bad namespace"
    await client.send_to(bytes_data=b"$7;room;;echo;0;0;\x00\xff")
    assert await client.receive_from() == "$7;room;;echo;0;0;\x00\ufffd"


@pytest.mark.asyncio
async def test_rooms_veto_and_leave_all_quirk(client: WebsocketCommunicator) -> None:
    await client.send_to(text_data="$8;room;vip;_OnRoomJoin;0;0;")
    assert await client.receive_from() == "$8;room;vip;_OnRoomJoin;1;0;members only"
    await client.send_to(text_data="$9;room;lobby;_OnRoomJoin;0;0;")
    assert await client.receive_from() == "$9;;;;;;"
    # neffos.js leaveAll() sends _OnRoomLeft; it is answered like a leave.
    await client.send_to(text_data="$10;room;lobby;_OnRoomLeft;0;0;")
    assert await client.receive_from() == "$10;;;;;;"
    await client.send_to(text_data="$11;room;lobby;_OnRoomLeave;0;0;")
    assert await client.receive_from() == "$11;;;;;;"  # not in the room: still fine


@pytest.mark.asyncio
async def test_server_asks_its_own_client_from_a_handler(client: WebsocketCommunicator) -> None:
    await client.send_to(text_data="$12;room;;ask-back;0;0;")
    question = await frame(client)
    assert (question.event, question.text) == ("question", "what?")
    assert question.wait and not question.is_client_wait
    await client.send_to(text_data=serialize(question.answer("forty-two")))
    assert await client.receive_from() == "$12;room;;ask-back;0;0;forty-two"


@pytest.mark.asyncio
async def test_forced_join_waits_for_the_client(client: WebsocketCommunicator) -> None:
    await client.send_to(text_data="$13;room;;pull-in;0;0;")
    request = await frame(client)
    assert (request.event, request.room) == ("_OnRoomJoin", "forced")
    await client.send_to(text_data=f"{request.wait};;;;;;")
    assert await client.receive_from() == "$13;room;;pull-in;0;0;forced"


@pytest.mark.asyncio
async def test_view_helpers_reach_clients(spec: LayerSpec, client: WebsocketCommunicator) -> None:
    layer = spec.build()
    connection_id = client.connection_id  # type: ignore[attr-defined]
    await neffos_server.broadcast("room", "news", "for everyone", layer=layer)
    assert await client.receive_from() == ";room;;news;0;0;for everyone"
    await neffos_server.send_to(connection_id, "room", "dm", "just you", layer=layer)
    assert await client.receive_from() == ";room;;dm;0;0;just you"
    asking = asyncio.ensure_future(
        neffos_server.ask(connection_id, "room", "q", "ready?", timeout=3, layer=layer)
    )
    question = await frame(client)
    await client.send_to(text_data=serialize(question.error("not yet")))
    with pytest.raises(AskError, match="not yet"):
        await asking
