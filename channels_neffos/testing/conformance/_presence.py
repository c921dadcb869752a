"""Presence: ``group_members``/``group_size`` exact at once, across instances and OS processes."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from typing import Any

import pytest

from ._helpers import LayerSpec, receive_within, run_child

#: The bound docs/presence.rst gives for members of a process that died without closing.
DEAD_PROCESS_BOUND = 15.0


def _group() -> str:
    return "p-" + secrets.token_hex(4)


class PresenceCases:
    @pytest.mark.asyncio
    async def test_presence_is_listed_in_extensions(self, layer: Any) -> None:
        assert "presence" in layer.extensions

    @pytest.mark.asyncio
    async def test_members_are_exact_right_after_group_add_and_discard_returns(
        self, make_layer: Any
    ) -> None:
        """From a third instance, with no waiting between the change and the question."""
        one, two, observer = make_layer(), make_layer(), make_layer()
        group = _group()
        assert await observer.group_members(group) == []
        assert await observer.group_size(group) == 0
        a, b = await one.new_channel(), await two.new_channel()
        await one.group_add(group, a)
        assert await observer.group_members(group) == [a]
        await two.group_add(group, b)
        assert await observer.group_members(group) == sorted([a, b])
        assert await observer.group_size(group) == 2
        assert await one.group_size(group) == await two.group_size(group) == 2
        await one.group_discard(group, a)
        assert await observer.group_members(group) == [b]
        await two.group_discard(group, b)
        assert await observer.group_size(group) == 0

    @pytest.mark.asyncio
    async def test_adding_a_channel_of_another_instance_is_visible_at_once(
        self, make_layer: Any
    ) -> None:
        owner, adder = make_layer(), make_layer()
        group = _group()
        channel = await owner.new_channel()
        await adder.group_add(group, channel)  # a remote membership change
        assert await adder.group_members(group) == [channel]
        assert await owner.group_members(group) == [channel]

    @pytest.mark.asyncio
    async def test_many_members_in_one_process_are_counted_once_each(self, make_layer: Any) -> None:
        layer, observer = make_layer(), make_layer()
        group = _group()
        channels = [await layer.new_channel() for _ in range(300)]
        await asyncio.gather(*(layer.group_add(group, channel) for channel in channels))
        await layer.group_add(group, channels[0])  # twice: still one member
        assert await observer.group_size(group) == 300
        assert await observer.group_members(group) == sorted(channels)

    @pytest.mark.asyncio
    async def test_members_of_a_closed_layer_vanish_at_once(self, make_layer: Any) -> None:
        leaving, observer = make_layer(), make_layer()
        group = _group()
        channel = await leaving.new_channel()
        await leaving.group_add(group, channel)
        assert await observer.group_size(group) == 1
        await leaving.close()
        assert await observer.group_members(group) == []

    @pytest.mark.asyncio
    async def test_group_expiry_applies_to_presence(self, make_layer: Any) -> None:
        layer, observer = make_layer(group_expiry=1), make_layer()
        group = _group()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        assert await observer.group_members(group) == [channel]
        await asyncio.sleep(1.2)
        assert await observer.group_members(group) == []

    @pytest.mark.asyncio
    async def test_members_in_another_os_process_and_gone_when_it_is_killed(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        """A process killed with SIGKILL cannot retract; its members must still vanish within
        the documented bound (at once, as the broker sees its connection close) and never come
        back."""
        group = _group()
        report = await layer.new_channel()
        own = await layer.new_channel()
        await layer.group_add(group, own)
        child = await run_child(layer_spec, "members", group, "3", report)
        try:
            ready = await receive_within(layer, report, timeout=20)
            assert ready["type"] == "ready"
            assert await layer.group_members(group) == sorted([own, *ready["channels"]])
            child.send_signal(signal.SIGKILL)
            await child.wait()
            started = time.monotonic()
            while await layer.group_size(group) != 1:
                assert time.monotonic() - started < DEAD_PROCESS_BOUND
                await asyncio.sleep(0.05)
            for _ in range(3):  # and they do not come back
                assert await layer.group_members(group) == [own]
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
