"""Sending and receiving: process, worker and cross-instance channels."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from ..._core.validation import check_channel_name
from ._helpers import (
    assert_nothing_arrives,
    receive_within,
)


class MessagingCases:
    # -- send / receive ------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_send_receive_process_channel(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "test.message", "text": "hello"})
        assert await receive_within(layer, channel) == {"type": "test.message", "text": "hello"}

    @pytest.mark.asyncio
    async def test_send_receive_worker_channel(self, layer: Any) -> None:
        channel = "worker-" + secrets.token_hex(4)
        receiving = asyncio.ensure_future(receive_within(layer, channel))
        await asyncio.sleep(0.1)  # NATS keeps nothing for a worker channel nobody reads yet
        await layer.send(channel, {"type": "task", "n": 1})
        assert await receiving == {"type": "task", "n": 1}

    @pytest.mark.asyncio
    async def test_fifo_process_channel(self, layer: Any) -> None:
        channel = await layer.new_channel()
        for n in range(50):
            await layer.send(channel, {"type": "n", "n": n})
        assert [(await receive_within(layer, channel))["n"] for _ in range(50)] == list(range(50))

    @pytest.mark.asyncio
    async def test_fifo_from_another_instance(self, make_layer: Callable[..., Any]) -> None:
        receiver, sender = make_layer(), make_layer()
        channel = await receiver.new_channel()
        for n in range(100):
            await sender.send(channel, {"type": "n", "n": n})
        got = [(await receive_within(receiver, channel))["n"] for _ in range(100)]
        assert got == list(range(100))

    @pytest.mark.asyncio
    async def test_fifo_worker_channel(self, make_layer: Callable[..., Any]) -> None:
        receiver, sender = make_layer(), make_layer()
        channel = "fifo-" + secrets.token_hex(4)
        first = asyncio.ensure_future(receive_within(receiver, channel))
        await asyncio.sleep(0.1)
        for n in range(30):
            await sender.send(channel, {"type": "n", "n": n})
        got = [(await first)["n"]]
        got += [(await receive_within(receiver, channel))["n"] for _ in range(29)]
        assert got == list(range(30))

    @pytest.mark.asyncio
    async def test_new_channel_names_are_unique_and_valid(self, layer: Any) -> None:
        names = {await layer.new_channel() for _ in range(100)}
        assert len(names) == 100
        for name in names:
            assert "!" in name
            check_channel_name(name)  # Channels' rules (TypeError if broken)

    @pytest.mark.asyncio
    async def test_new_channel_custom_prefix(self, layer: Any) -> None:
        channel = await layer.new_channel("daphne.response")
        assert channel.startswith("daphne.response.")
        await layer.send(channel, {"type": "x"})
        assert (await receive_within(layer, channel))["type"] == "x"

    @pytest.mark.asyncio
    async def test_received_messages_are_private_copies(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer()
        group = "copies-" + secrets.token_hex(4)
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, first)
        await layer.group_add(group, second)
        original = {"type": "x", "items": [1, 2]}
        await layer.group_send(group, original)
        one = await receive_within(layer, first)
        one["items"].append(3)
        assert (await receive_within(layer, second))["items"] == [1, 2]
        assert original == {"type": "x", "items": [1, 2]}

    @pytest.mark.asyncio
    async def test_two_instances_exchange_process_channel_messages(
        self, make_layer: Callable[..., Any]
    ) -> None:
        a, b = make_layer(), make_layer()
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await a.send(channel_b, {"type": "ping", "reply": channel_a})
        request = await receive_within(b, channel_b)
        await b.send(request["reply"], {"type": "pong"})
        assert (await receive_within(a, channel_a))["type"] == "pong"

    @pytest.mark.asyncio
    async def test_worker_channel_two_readers_each_message_once(
        self, make_layer: Callable[..., Any]
    ) -> None:
        readers, sender = [make_layer(), make_layer()], make_layer()
        channel = "jobs-" + secrets.token_hex(4)
        received: list[tuple[int, int]] = []
        stop = asyncio.Event()

        async def read(index: int, reader: Any) -> None:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(reader.receive(channel), 0.5)
                except asyncio.TimeoutError:
                    continue
                received.append((index, message["n"]))

        tasks = [asyncio.ensure_future(read(i, r)) for i, r in enumerate(readers)]
        await asyncio.sleep(0.3)
        for n in range(60):
            await sender.send(channel, {"type": "job", "n": n})
        for _ in range(100):
            if len(received) >= 60:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # would reveal duplicates
        stop.set()
        await asyncio.gather(*tasks)
        assert sorted(n for _, n in received) == list(range(60))

    @pytest.mark.asyncio
    async def test_concurrent_receivers_on_one_channel_each_get_one(self, layer: Any) -> None:
        channel = await layer.new_channel()
        receivers = [asyncio.ensure_future(receive_within(layer, channel)) for _ in range(2)]
        await asyncio.sleep(0.05)
        await layer.send(channel, {"type": "x", "n": 1})
        await layer.send(channel, {"type": "x", "n": 2})
        results = await asyncio.gather(*receivers)
        assert sorted(r["n"] for r in results) == [1, 2]

    @pytest.mark.asyncio
    async def test_receive_on_empty_channel_times_out(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await assert_nothing_arrives(layer, channel, wait=0.2)
