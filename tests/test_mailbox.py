"""The mailbox's cancellation rules, at the moments where a cancellation and a wake-up meet."""

from __future__ import annotations

import asyncio

import pytest

from channels_neffos._core.mailboxes import Mailbox
from channels_neffos.exceptions import LayerClosed


def mailbox() -> Mailbox:
    return Mailbox("c", 10, lambda channel, count: None)


@pytest.mark.asyncio
async def test_a_receive_cancelled_just_before_a_delivery_raises_cancelled_and_loses_nothing() -> (
    None
):
    box = mailbox()
    first, second = asyncio.ensure_future(box.get()), asyncio.ensure_future(box.get())
    await asyncio.sleep(0)  # both wait
    first.cancel()  # cancels its waiter at once; the task itself runs later
    box.put(b"m", float("inf"))  # the wake-up skips the cancelled waiter
    with pytest.raises(asyncio.CancelledError):
        await first  # was: ValueError (its waiter was no longer in the deque)
    assert await asyncio.wait_for(second, 1) == b"m"


@pytest.mark.asyncio
async def test_a_receive_cancelled_while_the_layer_closes_raises_cancelled() -> None:
    box = mailbox()
    receiver = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    receiver.cancel()
    box.fail_waiters(LayerClosed("c"))  # takes the waiters away
    with pytest.raises(asyncio.CancelledError):
        await receiver
