"""Requests and their replies for one process: asks, group asks and remote membership changes.

A request carries a *reply address* ``P/<pid>/r/<id>`` that the asking process's own wildcard
subscription already covers, so no subscription is made per request. Semantics:

* **One answer per request.** The first reply resolves the request; a reply that arrives after
  the timeout, or a second one (``group_ask``), finds no slot: it is dropped and counted in
  ``layer.counters["late_replies"]``.
* **No responders, fast.** The broker (NATS' 503 status, Redis' receiver count of 0) or the
  target's owner (a "no such channel" reply) says when nothing holds the target, and the request
  fails at once with ``NoResponders`` instead of waiting for its timeout.
* **Replies travel together.** A reply is published to the asker's reply inbox ``P/<pid>/r``
  (its wildcard subscription covers it; the envelope carries the full reply address), so the
  replies one process sends to another in one loop turn share a frame.
* **Requests do not overtake.** Before a request is published, the process's outbox is flushed,
  so an ask reaches a channel after every message sent to it before.
* **Nothing outlives the process.** Closing the process fails every pending request with
  ``LayerClosed``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import envelope
from .envelope import REPLY, Envelope
from .exceptions import AskError, AskTimeout, BrokerUnavailable, LayerClosed, NoResponders

if TYPE_CHECKING:
    from .process import LayerProcess


class Replies:
    """The reply addresses one :class:`~channels_neffos.process.LayerProcess` waits on."""

    def __init__(self, process: LayerProcess) -> None:
        self.process = process
        #: reply address -> the future its answer resolves
        self.pending: dict[str, asyncio.Future[Envelope]] = {}
        self._inboxes: dict[str, str] = {}  # asker pid -> its reply inbox subject

    async def request(
        self, target: str, timeout: float, send: Callable[[str], Awaitable[None]]
    ) -> Any:
        """Open a reply address, let ``send(reply_to)`` deliver the request, await the answer.

        Returns the reply's value; raises ``AskError`` for an error reply, ``NoResponders`` when
        the broker or the target's owner says nothing holds the target, ``AskTimeout`` when no
        answer comes in time.
        """
        process = self.process
        await process.listen()
        reply_to = process.transport.subject(process.prefix, process.pid, "r", secrets.token_hex(8))
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

    async def publish_request(self, subject: str, message: Envelope) -> int | None:
        """Publish an envelope that carries ``reply_to``; the broker's receiver count if known."""
        if message.reply_to is None:
            raise ValueError("a request needs a reply_to address")
        process = self.process
        await process.outbox.flush()  # what this process published before goes first
        try:
            receivers = await process.transport.publish_request(
                subject, envelope.encode(message), message.reply_to
            )
            process.published_directly += 1
            return receivers
        except BrokerUnavailable:
            raise  # already says why (PermissionDenied: the user may not publish there)
        except ConnectionError as exc:
            raise BrokerUnavailable(process.transport.url, exc) from exc

    async def send_reply(self, reply_to: str, asker_pid: str, body: bytes) -> None:
        process = self.process
        answer = Envelope(REPLY, process.pid, reply_to, body)
        if asker_pid == process.pid:
            self.resolve(answer)  # asked from this very process: no broker needed
        else:
            await process.publish(self._reply_subject(reply_to, asker_pid), answer)

    def _reply_subject(self, reply_to: str, asker_pid: str) -> str:
        """Where to publish a reply: the asker's reply inbox ``P/<pid>/r`` for addresses under
        it, so that replies to one process share frames (the envelope names the address);
        any other address as it is."""
        process = self.process
        inbox = self._inboxes.get(asker_pid)
        if inbox is None:
            if len(self._inboxes) >= 10_000:
                self._inboxes.clear()
            inbox = self._inboxes[asker_pid] = process.transport.subject(
                process.prefix, asker_pid, "r"
            )
        return inbox if reply_to.startswith(inbox) else reply_to

    def resolve(self, answer: Envelope) -> None:
        """An answer arrived: hand it to its request, or count it as late."""
        future = self.pending.get(answer.target)
        if future is None or future.done():
            self.process.layer.counters["late_replies"] += 1  # after a timeout, or a second one
        else:
            future.set_result(answer)

    def refuse(self, request: Envelope, kind: str, value: Any) -> None:
        """Answer ``request`` in the background with a reply of ``kind`` (an error, or "n")."""
        if request.reply_to is not None:
            body = envelope.pack_reply(kind, value)
            self.process.spawn(self.send_reply(request.reply_to, request.origin_pid, body))

    def fail(self, reply_to: str, error: Exception) -> None:
        """The broker says the request waiting on ``reply_to`` cannot be answered."""
        future = self.pending.get(reply_to)
        if future is not None and not future.done():
            future.set_exception(error)

    def fail_all(self) -> None:
        """The process is closing: every waiting request fails with ``LayerClosed``."""
        for reply_to, future in self.pending.items():
            if not future.done():
                future.set_exception(LayerClosed(reply_to))
