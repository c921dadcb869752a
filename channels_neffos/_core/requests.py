"""Request correlation: the requests one process waits on, and the answers that end them.

Asks, group asks, remote membership changes and presence questions are requests: a message
that carries a *reply address* ``P/<pid>/r/<token>`` (:mod:`.names`) which the asking process's
own wildcard subscription already covers, so no subscription is made per request. This module
only matches answers to requests; publishing them is the router's. Semantics:

* **One answer per request.** The first answer resolves the request; one that arrives after the
  timeout, or a second one (``group_ask``), finds no slot: it is dropped and counted as
  ``late_replies``.
* **Failing fast.** The broker (NATS' 503 status, a refusal) or the target's owner (a "no such
  channel" answer) may say that nothing will answer: the request fails at once with
  ``NoResponders`` (or the refusal) instead of waiting for its timeout.
* **Nothing outlives the process.** Closing fails every pending request with ``LayerClosed``;
  a request that ends in any way frees its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .. import envelope
from ..envelope import Envelope
from ..exceptions import AskError, AskTimeout, LayerClosed, NoResponders


class Requests:
    """The reply addresses one router waits on."""

    __slots__ = ("_count", "_new_address", "pending")

    def __init__(self, new_address: Callable[[], str], count: Callable[[str], None]) -> None:
        self._new_address = new_address  # a fresh reply address of this process
        self._count = count  # counts late replies
        #: reply address -> the future its answer resolves
        self.pending: dict[str, asyncio.Future[Envelope]] = {}

    async def request(
        self, target: str, timeout: float, send: Callable[[str], Awaitable[None]]
    ) -> Any:
        """Open a reply address, let ``send(reply_to)`` deliver the request, await the answer.

        Returns the answer's value; raises ``AskError`` for an error answer, ``NoResponders``
        when the broker or the target's owner says nothing holds the target, ``AskTimeout``
        when no answer comes in time. The caller's process must already receive its replies.
        """
        reply_to = self._new_address()
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self.pending[reply_to] = future
        try:
            await send(reply_to)
            try:
                answer = await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise AskTimeout(target, timeout) from None
            except LayerClosed:
                raise LayerClosed(target) from None
        finally:
            del self.pending[reply_to]
        try:
            kind, value = envelope.unpack_reply(answer.body)
        except ValueError as exc:
            raise AskError(f"unreadable reply from {target!r}: {exc}") from exc
        if kind == envelope.REPLY_NO_SUCH_CHANNEL:
            raise NoResponders(target)
        if kind == envelope.REPLY_ERROR:
            raise AskError(str(value))
        return value

    def resolve(self, answer: Envelope) -> None:
        """An answer arrived: hand it to its request, or count it as late."""
        future = self.pending.get(answer.target)
        if future is None or future.done():
            self._count("late_replies")  # after a timeout, or a second one
        else:
            future.set_result(answer)

    def fail(self, reply_to: str, error: Exception) -> None:
        """The request waiting on ``reply_to`` cannot be answered (the broker says so)."""
        future = self.pending.get(reply_to)
        if future is not None and not future.done():
            future.set_exception(error)

    def fail_all(self) -> None:
        """The process is closing: every waiting request fails with ``LayerClosed``."""
        for reply_to, future in self.pending.items():
            if not future.done():
                future.set_exception(LayerClosed(reply_to))
