"""Groups, in one instance, across instances and across OS processes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from ._helpers import (
    LayerSpec,
    assert_nothing_arrives,
    receive_within,
    run_child,
)


class GroupCases:
    # -- groups --------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_group_send(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, one)
        await layer.group_add(group, two)
        await layer.group_send(group, {"type": "hello"})
        assert (await receive_within(layer, one))["type"] == "hello"
        assert (await receive_within(layer, two))["type"] == "hello"

    @pytest.mark.asyncio
    async def test_group_add_twice_delivers_once(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "once"})
        assert (await receive_within(layer, channel))["type"] == "once"
        await assert_nothing_arrives(layer, channel)

    @pytest.mark.asyncio
    async def test_group_discard_before_add_is_harmless(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_discard(group, channel)
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "x"})
        assert (await receive_within(layer, channel))["type"] == "x"

    @pytest.mark.asyncio
    async def test_group_discard_then_nothing_arrives(self, make_layer: Callable[..., Any]) -> None:
        member, sender = make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel = await member.new_channel()
        await member.group_add(group, channel)
        await member.group_discard(group, channel)
        await member.group_send(group, {"type": "local"})
        await sender.group_send(group, {"type": "remote"})
        await assert_nothing_arrives(member, channel, wait=0.5)

    @pytest.mark.asyncio
    async def test_group_send_to_empty_group_is_harmless(self, layer: Any) -> None:
        await layer.group_send("nobody-" + secrets.token_hex(4), {"type": "x"})

    @pytest.mark.asyncio
    async def test_group_send_reaches_members_in_two_instances(
        self, make_layer: Callable[..., Any]
    ) -> None:
        a, b, sender = make_layer(), make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await a.group_add(group, channel_a)
        await b.group_add(group, channel_b)
        await a.group_send(group, {"type": "from-a"})
        await sender.group_send(group, {"type": "from-sender"})
        for layer, channel in ((a, channel_a), (b, channel_b)):
            types = [(await receive_within(layer, channel))["type"] for _ in range(2)]
            assert sorted(types) == ["from-a", "from-sender"]
            await assert_nothing_arrives(layer, channel, wait=0.2)

    @pytest.mark.asyncio
    async def test_group_add_of_a_channel_in_another_instance(
        self, make_layer: Callable[..., Any]
    ) -> None:
        owner, other = make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel = await owner.new_channel()
        await other.group_add(group, channel)
        await other.group_send(group, {"type": "joined-remotely"})
        assert (await receive_within(owner, channel))["type"] == "joined-remotely"
        await other.group_discard(group, channel)
        await other.group_send(group, {"type": "after-discard"})
        await assert_nothing_arrives(owner, channel)

    @pytest.mark.asyncio
    async def test_group_send_reaches_member_in_another_os_process(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        group = "g-" + secrets.token_hex(4)
        report = await layer.new_channel()
        child = await run_child(layer_spec, "member", group, report)
        try:
            ready = await receive_within(layer, report, timeout=20)
            assert ready["type"] == "ready"
            await layer.group_send(group, {"type": "across", "payload": [1, "two"]})
            forwarded = await receive_within(layer, report)
            assert forwarded["message"] == {"type": "across", "payload": [1, "two"]}
        finally:
            _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()

    @pytest.mark.asyncio
    async def test_group_send_from_another_os_process(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        child = await run_child(layer_spec, "group_send", group, '{"type": "from-child"}')
        _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()
        assert (await receive_within(layer, channel))["type"] == "from-child"

    @pytest.mark.asyncio
    async def test_send_from_another_os_process(self, layer: Any, layer_spec: LayerSpec) -> None:
        channel = await layer.new_channel()
        child = await run_child(layer_spec, "send", channel, '{"type": "direct", "n": 7}')
        _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()
        assert await receive_within(layer, channel) == {"type": "direct", "n": 7}

    @pytest.mark.asyncio
    async def test_group_send_exclude_holds_in_every_instance(
        self, make_layer: Callable[..., Any]
    ) -> None:
        a, b = make_layer(), make_layer()
        if "exclude" not in a.extensions:
            pytest.fail("this layer lacks the 'exclude' extension; switch the case off")
        group = "g-" + secrets.token_hex(4)
        sender, local_peer, remote_peer = (
            await a.new_channel(),
            await a.new_channel(),
            await b.new_channel(),
        )
        for layer, channel in ((a, sender), (a, local_peer), (b, remote_peer)):
            await layer.group_add(group, channel)
        await a.group_send(group, {"type": "said"}, exclude=sender)
        await b.group_send(group, {"type": "said-remotely"}, exclude=sender)
        for layer, channel in ((a, local_peer), (b, remote_peer)):
            got = [(await receive_within(layer, channel))["type"] for _ in range(2)]
            assert sorted(got) == ["said", "said-remotely"]
        await assert_nothing_arrives(a, sender)
