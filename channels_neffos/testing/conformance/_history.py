"""History groups: positions, one order per group on every instance, ``group_history``."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from ._helpers import eventually, receive_within

HISTORY = {"h-*": {"size": 100, "ttl": 60}}


def _group() -> str:
    return "h-" + secrets.token_hex(4)


async def _receive_all(layer: Any, channel: str, count: int) -> list[dict[str, Any]]:
    return [await receive_within(layer, channel) for _ in range(count)]


class HistoryCases:
    """Cases for a layer whose broker keeps history (the ``history`` extension)."""

    @pytest.mark.asyncio
    async def test_history_is_listed_in_extensions(self, make_layer: Any) -> None:
        assert "history" in make_layer(history=HISTORY).extensions

    @pytest.mark.asyncio
    async def test_members_everywhere_get_contiguous_positions_in_one_order(
        self, make_layer: Any
    ) -> None:
        """Three instances send concurrently; members on all three (the senders' own members
        included) see the same messages in the same order, offsets 1, 2, 3... with no hole."""
        layers = [make_layer(history=HISTORY) for _ in range(3)]
        group = _group()
        channels = [await layer.new_channel() for layer in layers]
        for layer, channel in zip(layers, channels, strict=True):
            await layer.group_add(group, channel)
        per_sender = 30

        async def send(index: int, layer: Any) -> None:
            for n in range(per_sender):
                await layer.group_send(group, {"type": "m", "from": index, "n": n})
                if n % 7 == 0:
                    await asyncio.sleep(0)  # interleave the senders

        await asyncio.gather(*(send(i, layer) for i, layer in enumerate(layers)))
        total = per_sender * len(layers)
        seen = [
            await _receive_all(layer, channel, total)
            for layer, channel in zip(layers, channels, strict=True)
        ]
        sequences = [[(m["from"], m["n"]) for m in messages] for messages in seen]
        assert sequences[0] == sequences[1] == sequences[2]
        for messages in seen:
            positions = [m["__position__"] for m in messages]
            assert len({p["epoch"] for p in positions}) == 1
            assert [p["offset"] for p in positions] == list(range(1, total + 1))
            assert not any(p.get("gap") for p in positions)
        for index in range(len(layers)):  # each sender's own order holds within the one order
            assert [n for f, n in sequences[0] if f == index] == list(range(per_sender))

    @pytest.mark.asyncio
    async def test_plain_groups_carry_no_position(self, make_layer: Any) -> None:
        sender, receiver = make_layer(history=HISTORY), make_layer(history=HISTORY)
        channel = await receiver.new_channel()
        await receiver.group_add("plain-group", channel)
        await sender.group_send("plain-group", {"type": "m"})
        assert "__position__" not in await receive_within(receiver, channel)

    @pytest.mark.asyncio
    async def test_exclude_holds_for_history_groups(self, make_layer: Any) -> None:
        sender, receiver = make_layer(history=HISTORY), make_layer(history=HISTORY)
        group = _group()
        mine, theirs = await sender.new_channel(), await receiver.new_channel()
        await sender.group_add(group, mine)
        await receiver.group_add(group, theirs)
        await sender.group_send(group, {"type": "m", "n": 1}, exclude=mine)
        await sender.group_send(group, {"type": "m", "n": 2})
        assert (await receive_within(sender, mine))["n"] == 2
        assert [m["n"] for m in await _receive_all(receiver, theirs, 2)] == [1, 2]

    @pytest.mark.asyncio
    async def test_group_history_since_and_limit_from_a_non_member(self, make_layer: Any) -> None:
        sender, reader = make_layer(history=HISTORY), make_layer(history=HISTORY)
        group = _group()
        for n in range(10):
            await sender.group_send(group, {"type": "m", "n": n})

        async def written() -> bool:
            return bool((await reader.group_history(group)).offset == 10)

        await eventually(written, what="the ten messages in history")
        everything = await reader.group_history(group)
        assert [m["n"] for m in everything.messages] == list(range(10))
        assert everything.recovered and everything.epoch is not None
        assert everything.position == {"epoch": everything.epoch, "offset": 10}
        last = await reader.group_history(group, limit=3)
        assert [m["n"] for m in last.messages] == [7, 8, 9]
        since = everything.messages[3]["__position__"]
        after = await reader.group_history(group, since=since)
        assert after.recovered
        assert [m["__position__"]["offset"] for m in after.messages] == list(range(5, 11))
        page = await reader.group_history(group, since=since, limit=2)
        assert page.recovered and [m["n"] for m in page.messages] == [4, 5]
        latest = await reader.group_history(group, since=everything.position)
        assert latest.recovered and latest.messages == []

    @pytest.mark.asyncio
    async def test_an_evicted_position_or_another_epoch_is_not_recovered(
        self, make_layer: Any
    ) -> None:
        group = "small-" + secrets.token_hex(4)
        history = {"small-*": {"size": 5, "ttl": 60}}
        layer = make_layer(history=history)
        for n in range(12):
            await layer.group_send(group, {"type": "m", "n": n})

        async def written() -> bool:
            return bool((await layer.group_history(group)).offset == 12)

        await eventually(written, what="twelve messages appended")
        kept = await layer.group_history(group)
        assert [m["n"] for m in kept.messages] == [7, 8, 9, 10, 11]
        evicted = await layer.group_history(group, since={"epoch": kept.epoch, "offset": 2})
        assert not evicted.recovered  # offsets 3-7 are gone: never presented as complete
        assert [m["n"] for m in evicted.messages] == [7, 8, 9, 10, 11]
        other = await layer.group_history(group, since={"epoch": "another", "offset": 11})
        assert not other.recovered
        assert [m["n"] for m in other.messages] == [7, 8, 9, 10, 11]
        future = await layer.group_history(group, since={"epoch": kept.epoch, "offset": 99})
        assert not future.recovered

    @pytest.mark.asyncio
    async def test_messages_older_than_ttl_are_gone(self, make_layer: Any) -> None:
        group = "brief-" + secrets.token_hex(4)
        layer = make_layer(history={"brief-*": {"size": 100, "ttl": 0.3, "meta_ttl": 60}})
        await layer.group_send(group, {"type": "m", "n": 1})

        async def appended() -> bool:
            return bool((await layer.group_history(group)).offset == 1)

        await eventually(appended, what="the message appended")
        first = await layer.group_history(group)

        async def expired() -> bool:
            return not (await layer.group_history(group)).messages

        await eventually(expired, what="the message expired")
        await layer.group_send(group, {"type": "m", "n": 2})

        async def second() -> bool:
            found = await layer.group_history(group)
            return [m["n"] for m in found.messages] == [2]

        await eventually(second, what="the second message appended")
        found = await layer.group_history(group, since={"epoch": first.epoch, "offset": 0})
        assert not found.recovered and [m["n"] for m in found.messages] == [2]
        if found.epoch == first.epoch:  # the position outlived the message (Redis: meta_ttl)
            assert found.offset == 2
        else:  # or the group starts again in a new epoch (NATS: no message kept, no position)
            assert found.offset == 1

    @pytest.mark.asyncio
    async def test_misuse_is_refused_with_advice(self, make_layer: Any) -> None:
        layer = make_layer(history=HISTORY)
        with pytest.raises(ValueError, match="keeps no history"):
            await layer.group_history("plain-group")
        with pytest.raises(ValueError, match="reserved key"):
            await layer.group_send(_group(), {"type": "m", "__position__": 1})
        with pytest.raises(TypeError, match="since must be a position"):
            await layer.group_history(_group(), since=3)
        with pytest.raises(ValueError, match="size"):
            make_layer(history={"x": {"size": 0, "ttl": 1}})
        with pytest.raises(TypeError, match="history must be a dict"):
            make_layer(history=["x"])
