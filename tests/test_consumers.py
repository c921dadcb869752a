"""The ask mixins on real Channels consumers, on both layers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.testing import ApplicationCommunicator

from channels_neffos.consumers import AskMixin, SyncAskMixin
from channels_neffos.exceptions import AskError
from channels_neffos.testing.conformance import LayerSpec


class AsyncResponder(AskMixin, AsyncConsumer):  # type: ignore[misc]
    async def hello(self, message: dict[str, Any]) -> None:
        await self.send({"type": "channel", "name": self.channel_name})

    async def price_quote(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"price": message["n"] * 2}

    async def notify(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "notified"})
        return {"ignored": "not an ask"}

    async def explode(self, message: dict[str, Any]) -> None:
        raise RuntimeError("kaput")


class SyncResponder(SyncAskMixin, SyncConsumer):  # type: ignore[misc]
    def hello(self, message: dict[str, Any]) -> None:
        self.send({"type": "channel", "name": self.channel_name})

    def price_quote(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"price": message["n"] * 2}

    def notify(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send({"type": "notified"})
        return {"ignored": "not an ask"}

    def explode(self, message: dict[str, Any]) -> None:
        raise RuntimeError("kaput")


@pytest.mark.asyncio
@pytest.mark.parametrize("consumer", [AsyncResponder, SyncResponder])
async def test_handler_return_value_answers_the_ask(spec: LayerSpec, consumer: type) -> None:
    communicator = ApplicationCommunicator(consumer.as_asgi(), {"type": "test"})
    await communicator.send_input({"type": "hello"})
    channel = (await communicator.receive_output(5))["name"]
    asker = spec.build()

    assert await asker.ask(channel, {"type": "price.quote", "n": 21}) == {"price": 42}

    await asker.send(channel, {"type": "notify"})  # a plain message: return value ignored
    assert (await communicator.receive_output(5))["type"] == "notified"
    await asyncio.sleep(0.1)
    assert asker.counters["late_replies"] == 0

    with pytest.raises(AskError, match="kaput"):
        await asker.ask(channel, {"type": "explode"})
    with pytest.raises(RuntimeError, match="kaput"):  # and the consumer fails as in Channels
        await communicator.wait(5)
