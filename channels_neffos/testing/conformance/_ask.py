"""The ask extension: request/reply across instances, timeouts, no responders, error replies."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from channels_neffos.exceptions import AskError, AskTimeout, NoResponders

from ._helpers import LayerSpec, eventually, receive_within, run_child

#: "Promptly": NoResponders must come well before any ask timeout.
PROMPT = 0.5


async def answer_asks(layer: Any, channel: str, count: int = 1, **extra: Any) -> None:
    for _ in range(count):
        request = await receive_within(layer, channel)
        await layer.reply(request, {"echo": request.get("n"), **extra})


class AskCases:
    """Cases for layers with the ``"ask"`` extension."""

    def test_ask_is_listed_in_extensions(self, layer: Any) -> None:
        assert "ask" in layer.extensions

    @pytest.mark.asyncio
    async def test_ask_a_channel_in_another_instance(self, make_layer: Callable[..., Any]) -> None:
        asker, responder = make_layer(), make_layer()
        channel = await responder.new_channel()
        answering = asyncio.ensure_future(answer_asks(responder, channel))
        reply = await asker.ask(channel, {"type": "question", "n": 41}, timeout=5)
        assert reply == {"echo": 41}
        await answering

    @pytest.mark.asyncio
    async def test_ask_a_channel_in_the_same_instance(self, layer: Any) -> None:
        channel = await layer.new_channel()
        answering = asyncio.ensure_future(answer_asks(layer, channel))
        assert await layer.ask(channel, {"type": "question", "n": 1}) == {"echo": 1}
        await answering

    @pytest.mark.asyncio
    async def test_ask_a_worker_channel(self, make_layer: Callable[..., Any]) -> None:
        asker, worker = make_layer(), make_layer()
        channel = "ask-worker-" + secrets.token_hex(4)
        answering = asyncio.ensure_future(answer_asks(worker, channel))
        await asyncio.sleep(0.1)  # the worker is receiving (NATS stores nothing before that)
        assert await asker.ask(channel, {"type": "job", "n": 3}) == {"echo": 3}
        await answering

    @pytest.mark.asyncio
    async def test_the_request_is_an_ordinary_message(self, make_layer: Callable[..., Any]) -> None:
        asker, responder = make_layer(), make_layer()
        channel = await responder.new_channel()
        asking = asyncio.ensure_future(asker.ask(channel, {"type": "chat.question", "n": 5}))
        request = await receive_within(responder, channel)
        assert request["type"] == "chat.question" and request["n"] == 5
        assert responder.is_ask(request)
        await responder.reply(request, {"ok": True})
        assert await asking == {"ok": True}

    @pytest.mark.asyncio
    async def test_group_ask_first_reply_wins(self, make_layer: Callable[..., Any]) -> None:
        asker, first, second = make_layer(), make_layer(), make_layer()
        group = "ask-g-" + secrets.token_hex(4)
        channel_1, channel_2 = await first.new_channel(), await second.new_channel()
        await first.group_add(group, channel_1)
        await second.group_add(group, channel_2)
        answering = [
            asyncio.ensure_future(answer_asks(first, channel_1, who="first")),
            asyncio.ensure_future(answer_asks(second, channel_2, who="second")),
        ]
        reply = await asker.group_ask(group, {"type": "who", "n": 9}, timeout=5)
        assert reply["echo"] == 9 and reply["who"] in ("first", "second")
        await asyncio.gather(*answering)
        # The slower member's answer is dropped, and counted.
        await eventually(lambda: asker.counters.get("late_replies") == 1, what="one late reply")

    @pytest.mark.asyncio
    async def test_group_ask_with_local_members_only(self, layer: Any) -> None:
        group = "ask-g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        answering = asyncio.ensure_future(answer_asks(layer, channel))
        assert await layer.group_ask(group, {"type": "q", "n": 2}) == {"echo": 2}
        await answering

    @pytest.mark.asyncio
    async def test_ask_times_out(self, make_layer: Callable[..., Any]) -> None:
        asker, silent = make_layer(), make_layer()
        channel = await silent.new_channel()
        started = time.monotonic()
        with pytest.raises(AskTimeout) as raised:
            await asker.ask(channel, {"type": "ignored"}, timeout=0.3)
        assert isinstance(raised.value, TimeoutError)
        assert 0.3 <= time.monotonic() - started < 2

    @pytest.mark.asyncio
    async def test_no_responders_when_the_owning_process_is_gone(
        self, make_layer: Callable[..., Any]
    ) -> None:
        asker, gone = make_layer(), make_layer()
        channel = await gone.new_channel()
        await gone.close()
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await asker.ask(channel, {"type": "anyone"}, timeout=5)
        assert time.monotonic() - started < PROMPT

    @pytest.mark.asyncio
    async def test_no_responders_when_the_owner_lacks_the_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        asker, owner = make_layer(), make_layer()
        real = await owner.new_channel()
        unknown = real[: real.index("!") + 1] + "doesnotexist"
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await asker.ask(unknown, {"type": "anyone"}, timeout=5)
        with pytest.raises(NoResponders):
            await owner.ask(unknown, {"type": "anyone"}, timeout=5)
        assert time.monotonic() - started < 2 * PROMPT

    @pytest.mark.asyncio
    async def test_group_ask_no_responders_for_an_empty_group(self, layer: Any) -> None:
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await layer.group_ask("empty-" + secrets.token_hex(4), {"type": "x"}, timeout=5)
        assert time.monotonic() - started < PROMPT

    @pytest.mark.asyncio
    async def test_no_responders_for_an_unread_worker_channel(self, layer: Any) -> None:
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await layer.ask("nobody-" + secrets.token_hex(4), {"type": "x"}, timeout=5)
        assert time.monotonic() - started < PROMPT

    @pytest.mark.asyncio
    async def test_error_reply_raises_ask_error(self, make_layer: Callable[..., Any]) -> None:
        asker, responder = make_layer(), make_layer()
        channel = await responder.new_channel()

        async def refuse() -> None:
            request = await receive_within(responder, channel)
            await responder.reply_error(request, "out of stock")

        refusing = asyncio.ensure_future(refuse())
        with pytest.raises(AskError, match="out of stock"):
            await asker.ask(channel, {"type": "order"})
        await refusing

    @pytest.mark.asyncio
    async def test_late_reply_is_dropped_without_leak(self, make_layer: Callable[..., Any]) -> None:
        asker, responder = make_layer(), make_layer()
        channel = await responder.new_channel()
        with pytest.raises(AskTimeout):
            await asker.ask(channel, {"type": "slow", "n": 1}, timeout=0.2)
        request = await receive_within(responder, channel)
        await responder.reply(request, {"too": "late"})
        await eventually(lambda: asker.counters.get("late_replies") == 1, what="one late reply")
        for layer in getattr(asker, "children", [asker]):  # MultiChannelLayer: each child
            processes = layer.stats().processes
            assert all(p.pending_replies == 0 for p in processes), "a reply slot outlived its ask"

    @pytest.mark.asyncio
    async def test_replying_twice_is_harmless(self, make_layer: Callable[..., Any]) -> None:
        asker, responder = make_layer(), make_layer()
        channel = await responder.new_channel()
        asking = asyncio.ensure_future(asker.ask(channel, {"type": "q"}))
        request = await receive_within(responder, channel)
        await responder.reply(request, {"n": 1})
        await responder.reply(request, {"n": 2})
        assert await asking == {"n": 1}

    @pytest.mark.asyncio
    async def test_ask_a_responder_in_another_os_process(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        report = await layer.new_channel()
        child = await run_child(layer_spec, "responder", report)
        try:
            ready = await receive_within(layer, report, timeout=20)
            reply = await layer.ask(ready["channel"], {"type": "q", "n": 77}, timeout=10)
            assert reply["echo"] == 77 and reply["pid"] != os.getpid()
        finally:
            _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()

    @pytest.mark.asyncio
    async def test_a_thousand_concurrent_asks_get_their_own_replies(
        self, make_layer: Callable[..., Any]
    ) -> None:
        asker, responder = make_layer(), make_layer(capacity=2000)
        channel = await responder.new_channel()
        answering = asyncio.ensure_future(answer_asks(responder, channel, count=1000))
        replies = await asyncio.gather(
            *(asker.ask(channel, {"type": "q", "n": n}, timeout=20) for n in range(1000))
        )
        assert [reply["echo"] for reply in replies] == list(range(1000))
        await answering

    def test_ask_from_sync_code(self, layer: Any) -> None:
        """A Django view asking a consumer: async_to_sync in a thread, consumer on its own loop."""
        consumer_loop = asyncio.new_event_loop()
        thread = threading.Thread(target=consumer_loop.run_forever, daemon=True)
        thread.start()
        try:
            channel = asyncio.run_coroutine_threadsafe(layer.new_channel(), consumer_loop).result(
                10
            )
            answering = asyncio.run_coroutine_threadsafe(
                answer_asks(layer, channel, count=3), consumer_loop
            )
            for n in range(3):
                assert async_to_sync(layer.ask)(channel, {"type": "q", "n": n}) == {"echo": n}
            answering.result(10)
        finally:
            consumer_loop.call_soon_threadsafe(consumer_loop.stop)
            thread.join()
            consumer_loop.close()

    @pytest.mark.asyncio
    @pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), "5", None])
    async def test_timeout_must_be_a_positive_number(self, layer: Any, timeout: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="timeout must be a positive number"):
            await layer.ask(channel, {"type": "q"}, timeout=timeout)

    @pytest.mark.asyncio
    async def test_reply_to_a_message_that_is_not_an_ask(self, layer: Any) -> None:
        with pytest.raises(ValueError, match="not an ask"):
            await layer.reply({"type": "plain"}, {"ok": True})

    @pytest.mark.asyncio
    async def test_the_ask_key_is_reserved(self, layer: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(ValueError, match="reserved key"):
            await layer.send(channel, {"type": "x", "__neffos_ask__": ["spoof", "x"]})
