"""Native messages (plain WebSocket frames) through NeffosConsumer, on both layers."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

import pytest
from channels.testing import WebsocketCommunicator

from channels_neffos.exceptions import AskError
from channels_neffos.namespaces import NATIVE_MESSAGE, Message, Namespace, NeffosConsumer, Reject
from channels_neffos.namespaces import event as on
from channels_neffos.namespaces import server as neffos_server
from channels_neffos.namespaces.consumer import _dropped_frames
from channels_neffos.namespaces.protocol import native, serialize
from channels_neffos.testing.conformance import LayerSpec


class Relay(Namespace):
    """Every native frame goes to the others in the client's room (or everyone)."""

    name = ""

    async def on_connect(self) -> None:
        query = parse_qs(self.connection.scope["query_string"].decode())
        if "refuse" in query:
            raise Reject("not today")
        self.room = query.get("room", [""])[0]
        if self.room:
            await self.join(self.room)  # a native client is not asked: it cannot answer

    @on(NATIVE_MESSAGE)
    async def relay(self, message: Message) -> str | None:
        if message.body == "whoami":
            return self.id
        if message.body == "reject":
            raise Reject("not that")
        if message.body == "bye":
            await self.disconnect()
            return None
        await self.broadcast(NATIVE_MESSAGE, message.body, room=self.room)
        return None


class NativeConsumer(NeffosConsumer):
    namespaces = [Relay]

    async def on_handshake(self) -> None:
        if b"deny" in self.scope["query_string"]:
            raise Reject("go away")


async def plain_client(query: str = "") -> WebsocketCommunicator:
    client = WebsocketCommunicator(NativeConsumer.as_asgi(), f"/native?{query}")
    connected, _ = await client.connect()
    assert connected
    return client


def test_the_consumer_is_native_only() -> None:
    assert NativeConsumer.native_only()
    assert not MixedConsumer.native_only()
    assert Relay.accepts_native_messages() and EmptyWithNative.accepts_native_messages()
    assert not Chat.accepts_native_messages()


def test_native_messages_are_written_bare() -> None:
    assert serialize(native("hello")) == "hello"
    assert serialize(native(b"\x00;;;;;;\xff")) == b"\x00;;;;;;\xff"
    assert serialize(native("x").error("failed")) == ";;;_OnNativeMessage;1;0;failed"
    assert serialize(Message("chat", "", NATIVE_MESSAGE, "x")) == ";chat;;_OnNativeMessage;0;0;x"


@pytest.mark.asyncio
async def test_plain_clients_relay_without_a_handshake(spec: LayerSpec) -> None:
    alice, bob = await plain_client(), await plain_client()
    await alice.send_to(text_data="hello; with six ;;;;; separators")
    assert await bob.receive_from(timeout=3) == "hello; with six ;;;;; separators"
    await alice.send_to(bytes_data=b"\x00\xff")
    assert (await bob.receive_output(timeout=3))["bytes"] == b"\x00\xff"
    assert await alice.receive_nothing(timeout=0.3)  # the sender is excluded
    await alice.send_to(text_data="reject")  # refused: logged, the client sees nothing
    await alice.send_to(text_data="whoami")  # the handler's return value: written bare
    assert (await alice.receive_from(timeout=3)).startswith("specific.")
    await alice.disconnect()
    await bob.disconnect()


@pytest.mark.asyncio
async def test_rooms_chosen_by_the_server(spec: LayerSpec) -> None:
    red, also_red, blue = [await plain_client(f"room={r}") for r in ("red", "red", "blue")]
    await red.send_to(text_data="for red")
    assert await also_red.receive_from(timeout=3) == "for red"
    assert await blue.receive_nothing(timeout=0.3)
    for client in (red, also_red, blue):
        await client.disconnect()


@pytest.mark.asyncio
async def test_views_reach_plain_clients_and_cannot_ask_them(spec: LayerSpec) -> None:
    layer = spec.build()
    client = await plain_client()
    await client.send_to(text_data="whoami")
    connection_id = await client.receive_from(timeout=3)
    await neffos_server.broadcast("", NATIVE_MESSAGE, "to everyone", layer=layer)
    assert await client.receive_from(timeout=3) == "to everyone"
    await neffos_server.send_to(connection_id, "", NATIVE_MESSAGE, b"just you", layer=layer)
    assert (await client.receive_output(timeout=3))["bytes"] == b"just you"
    with pytest.raises(AskError, match="native-only"):
        await neffos_server.ask(connection_id, "", NATIVE_MESSAGE, "?", timeout=3, layer=layer)
    await client.disconnect()
    await layer.close()


@pytest.mark.asyncio
async def test_refusals_and_disconnect(spec: LayerSpec) -> None:
    denied = WebsocketCommunicator(NativeConsumer.as_asgi(), "/native?deny=1")
    connected, _ = await denied.connect()
    assert not connected  # on_handshake refused the WebSocket handshake itself
    refused = await plain_client("refuse=1")
    closed = await refused.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4008}
    leaving = await plain_client()
    await leaving.send_to(text_data="bye")
    assert (await leaving.receive_output(timeout=3))["type"] == "websocket.close"


class Chat(Namespace):
    name = "chat"

    @on("shout")
    async def shout(self, message: Message) -> str:
        return message.text.upper()


class EmptyWithNative(Namespace):
    name = ""

    @on(NATIVE_MESSAGE)
    async def native_echo(self, message: Message) -> str:
        return f"native: {message.text}"


class MixedConsumer(NeffosConsumer):
    namespaces = [Chat, EmptyWithNative]


@pytest.mark.asyncio
async def test_neffos_and_native_messages_on_one_connection(
    spec: LayerSpec, caplog: pytest.LogCaptureFixture
) -> None:
    client = WebsocketCommunicator(MixedConsumer.as_asgi(), "/mixed")
    assert (await client.connect())[0]
    await client.send_to(text_data="M")
    assert (await client.receive_from(timeout=3)).startswith("A")
    with caplog.at_level(logging.INFO, logger="channels_neffos.namespaces"):
        _dropped_frames._last_logged.clear()  # another test may have logged one just now
        await client.send_to(text_data="before connecting")  # dropped: no namespace ""
        assert await client.receive_nothing(timeout=0.3)
    assert any("not connected to their namespace" in r.getMessage() for r in caplog.records)
    await client.send_to(text_data="$1;;;_OnNamespaceConnect;0;0;")
    assert await client.receive_from(timeout=3) == "$1;;;;;;"
    await client.send_to(text_data="plain words")
    assert await client.receive_from(timeout=3) == "native: plain words"
    await client.send_to(text_data="$2;chat;;_OnNamespaceConnect;0;0;")
    assert await client.receive_from(timeout=3) == "$2;;;;;;"
    await client.send_to(text_data="$3;chat;;shout;0;0;neffos still")
    assert await client.receive_from(timeout=3) == "$3;chat;;shout;0;0;NEFFOS STILL"
    await client.send_input({"type": "websocket.receive", "text": ""})  # not even native
    assert "invalid payload" in await client.receive_from(timeout=3)
    await client.disconnect()
