"""Payload round trips, async_to_sync from threads, cancellation."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from ._helpers import (
    RECEIVE_TIMEOUT,
    open_fd_count,
    receive_within,
)


class HygieneCases:
    # -- payloads ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_one_megabyte_message(self, make_layer: Callable[..., Any]) -> None:
        sender, receiver = make_layer(), make_layer()
        channel = await receiver.new_channel()
        blob = os.urandom(1_000_000)
        await sender.send(channel, {"type": "blob", "data": blob})
        assert (await receive_within(receiver, channel))["data"] == blob

    @pytest.mark.asyncio
    async def test_value_types_round_trip(self, make_layer: Callable[..., Any]) -> None:
        sender, receiver = make_layer(), make_layer()
        channel = await receiver.new_channel()
        message = {
            "type": "types",
            "bytes": b"\x00\xffbinary",
            "text": "unicode ✓ ünï",
            "int": -(2**63),
            "big": 2**64 - 1,
            "float": 3.25,
            "bool": True,
            "none": None,
            "nested": {"list": [1, [2, {"deep": b"x"}]], "empty": {}},
        }
        await sender.send(channel, message)
        assert await receive_within(receiver, channel) == message

    # -- async hygiene -------------------------------------------------------------------------

    def test_async_to_sync_from_threads_leaves_nothing_behind(self, layer: Any) -> None:
        """Django views and Celery tasks call the layer through async_to_sync: one new event
        loop per call. Each call must work and leave no socket, task or state behind."""
        consumer_loop = asyncio.new_event_loop()
        consumer_thread = threading.Thread(target=consumer_loop.run_forever, daemon=True)
        consumer_thread.start()

        def on_consumer_loop(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, consumer_loop).result(30)

        try:
            channel = on_consumer_loop(layer.new_channel())
            errors: list[BaseException] = []

            def view() -> None:
                try:
                    for n in range(5):
                        async_to_sync(layer.send)(channel, {"type": "x", "n": n})
                        async_to_sync(layer.group_send)("sync-group", {"type": "x"})
                except BaseException as exc:
                    errors.append(exc)

            view()  # warm up imports and lazy state before counting descriptors
            fds_before = open_fd_count()
            threads = [threading.Thread(target=view) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            gc.collect()
            assert not errors, errors
            assert open_fd_count() <= fds_before
            # Only the consumer's loop is open now: each closed loop took its process along.
            for child in getattr(layer, "children", [layer]):  # MultiChannelLayer: each child
                stats = getattr(child, "stats", None)  # channels_neffos layers have stats()
                if stats is not None:
                    assert len(stats().processes) == 1, "a closed loop kept state"
            received = [on_consumer_loop(receive_within(layer, channel))["n"] for _ in range(20)]
            assert sorted(received) == sorted(list(range(5)) * 4)
        finally:
            consumer_loop.call_soon_threadsafe(consumer_loop.stop)
            consumer_thread.join()
            consumer_loop.close()
        assert open_fd_count() < fds_before

    @pytest.mark.asyncio
    async def test_cancelled_receives_lose_and_duplicate_nothing(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=2000)
        channel = await layer.new_channel()
        sent = 1000

        async def produce() -> None:
            for n in range(sent):
                await layer.send(channel, {"type": "n", "n": n})
                if n % 10 == 0:
                    await asyncio.sleep(0)

        producer = asyncio.ensure_future(produce())
        received: list[int] = []
        cancelled = 0
        while cancelled < 1000 or len(received) < sent:
            task = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)
            if cancelled < 1000 and not task.done():
                task.cancel()
                cancelled += 1
                try:
                    received.append((await task)["n"])
                except asyncio.CancelledError:
                    pass
            else:
                received.append((await asyncio.wait_for(task, RECEIVE_TIMEOUT))["n"])
        await producer
        assert received == list(range(sent))
