"""flush/close, capacity, expiry, and validation with exact error types."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from channels.exceptions import ChannelFull

from ._helpers import (
    BAD_CHANNEL_NAMES,
    BAD_GROUP_NAMES,
    LayerSpec,
    assert_nothing_arrives,
    receive_within,
)

#: Seconds of ``expiry``/``group_expiry`` in the cases that wait for one to pass: short, since
#: they must sleep it; long enough that a message sent just before its receive never expires.
EXPIRY = 0.5


class LimitCases:
    # -- flush and close -----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_flush_drops_waiting_messages(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "old"})
        await layer.flush()
        await layer.send(channel, {"type": "new"})
        assert (await receive_within(layer, channel))["type"] == "new"

    @pytest.mark.asyncio
    async def test_flush_forgets_groups(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.flush()
        await layer.group_send(group, {"type": "x"})
        await assert_nothing_arrives(layer, channel)

    @pytest.mark.asyncio
    async def test_flush_drops_stored_worker_messages(self, make_layer: Callable[..., Any]) -> None:
        sender, reader = make_layer(), make_layer()
        channel = "flush-" + secrets.token_hex(4)
        await assert_nothing_arrives(reader, channel, wait=0.2)  # NATS: now subscribed
        await sender.send(channel, {"type": "old"})
        await asyncio.sleep(0.1)
        await reader.flush()
        await sender.flush()
        await assert_nothing_arrives(reader, channel, wait=0.3)

    @pytest.mark.asyncio
    async def test_close_then_use_again(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.close()
        await layer.close()  # idempotent
        again = await layer.new_channel()
        await layer.send(again, {"type": "x"})
        assert (await receive_within(layer, again))["type"] == "x"
        assert channel != again

    # -- capacity and expiry -------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_capacity_raises_channel_full_on_own_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=3)
        channel = await layer.new_channel()
        for _ in range(3):
            await layer.send(channel, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "x"})
        await receive_within(layer, channel)
        await layer.send(channel, {"type": "room again"})

    @pytest.mark.asyncio
    async def test_capacity_raises_channel_full_on_worker_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=2)
        channel = "full-" + secrets.token_hex(4)
        await layer.send(channel, {"type": "x"})
        await layer.send(channel, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "x"})

    @pytest.mark.asyncio
    async def test_channel_capacity_globs(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(capacity=100, channel_capacity={"tiny.*": 1})
        tiny = await layer.new_channel("tiny")
        roomy = await layer.new_channel("roomy")
        await layer.send(tiny, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(tiny, {"type": "x"})
        for _ in range(5):
            await layer.send(roomy, {"type": "x"})

    @pytest.mark.asyncio
    async def test_group_send_to_full_member_does_not_raise(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=1)
        group = "g-" + secrets.token_hex(4)
        full, free = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, full)
        await layer.group_add(group, free)
        await layer.send(full, {"type": "filler"})
        await layer.group_send(group, {"type": "broadcast"})
        assert (await receive_within(layer, full))["type"] == "filler"
        assert (await receive_within(layer, free))["type"] == "broadcast"

    @pytest.mark.asyncio
    async def test_expiry_on_own_channel(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(expiry=EXPIRY)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "stale"})
        await asyncio.sleep(EXPIRY + 0.1)  # the one thing to wait for here is the clock
        await layer.send(channel, {"type": "fresh"})
        assert (await receive_within(layer, channel))["type"] == "fresh"

    @pytest.mark.asyncio
    async def test_expiry_on_worker_channel(self, make_layer: Callable[..., Any]) -> None:
        sender, reader = make_layer(expiry=EXPIRY), make_layer(expiry=EXPIRY)
        channel = "exp-" + secrets.token_hex(4)
        await assert_nothing_arrives(reader, channel, wait=0.2)
        await sender.send(channel, {"type": "stale"})
        await asyncio.sleep(EXPIRY + 0.2)  # wall-clock send times: leave room for clock steps
        await sender.send(channel, {"type": "fresh"})
        assert (await receive_within(reader, channel))["type"] == "fresh"

    @pytest.mark.asyncio
    async def test_group_expiry(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(group_expiry=EXPIRY)
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await asyncio.sleep(EXPIRY + 0.1)
        await layer.group_send(group, {"type": "too late"})
        await assert_nothing_arrives(layer, channel)

    # -- validation ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    @pytest.mark.parametrize("name", BAD_CHANNEL_NAMES, ids=repr)
    async def test_bad_channel_name_raises_type_error(self, layer: Any, name: Any) -> None:
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send(name, {"type": "x"})

    @pytest.mark.asyncio
    @pytest.mark.parametrize("name", BAD_GROUP_NAMES, ids=repr)
    async def test_bad_group_name_raises_type_error(self, layer: Any, name: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add(name, channel)
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_send(name, {"type": "x"})

    @pytest.mark.asyncio
    async def test_names_with_a_trailing_newline_are_refused(self, layer: Any) -> None:
        # Channels' patterns end in "$", which also matches before a final newline; a newline
        # inside a broker subject would corrupt the NATS protocol, so names are matched whole.
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send(channel + "\n", {"type": "x"})
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add("group\n", channel)

    @pytest.mark.asyncio
    @pytest.mark.parametrize("message", [["a", "list"], "text", None, 42], ids=repr)
    async def test_message_must_be_a_dict(self, layer: Any, message: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="message must be a dict"):
            await layer.send(channel, message)
        with pytest.raises(TypeError, match="message must be a dict"):
            await layer.group_send("g", message)

    @pytest.mark.asyncio
    async def test_reserved_key_is_refused(self, layer: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(ValueError, match="__asgi_channel__"):
            await layer.send(channel, {"type": "x", "__asgi_channel__": "y"})

    @pytest.mark.asyncio
    @pytest.mark.parametrize("value", [object(), {1, 2}, 2**70], ids=["object", "set", "bigint"])
    async def test_unencodable_message_raises_type_error_everywhere(
        self, layer: Any, value: Any
    ) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="cannot be sent"):
            await layer.send(channel, {"type": "x", "value": value})

    @pytest.mark.asyncio
    async def test_cannot_receive_on_another_instances_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        owner, other = make_layer(), make_layer()
        channel = await owner.new_channel()
        with pytest.raises(ValueError, match="belongs to another process"):
            await other.receive(channel)

    def test_unknown_option_is_named(self, layer_spec: LayerSpec) -> None:
        with pytest.raises(TypeError, match="no_such_option"):
            layer_spec.build(no_such_option=1)

    def test_extensions_readable_from_sync_code(self, layer: Any) -> None:
        assert "groups" in layer.extensions
        assert "flush" in layer.extensions
