"""Fuzz target: a raw broker payload into a running :class:`~channels_neffos.process.LayerProcess`.

The bytes go where a transport hands them — the real entry points for broker messages:

* ``_on_process_message`` (the process's wildcard subscription: channel messages, asks, replies,
  membership changes),
* ``_on_group_message`` (a group subscription),
* the worker-channel fetcher (``_fetch_worker_messages``, one payload popped from a queue),

on a process whose broker is an in-memory transport, with a channel that has a mailbox of
capacity 1, a group member and a pending reply, so valid-looking input reaches real paths. Then
the event loop runs what the message scheduled (replies, group changes), and what was delivered
is decoded as ``receive()`` and ``ask()`` would (only ``ValueError`` allowed).

A crash is any exception out of those entry points, a fetcher that does not finish (a stuck
reader), an ERROR log record from ``channels_neffos`` (a failed background task) or an exception
reported to the event loop. Garbage must end as a counted drop (``layer.counters``), nothing else.

Run: ``.venv/bin/python fuzz/fuzz_process.py fuzz/corpus/process -max_total_time=60``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from time import monotonic
from typing import Any

import atheris

with atheris.instrument_imports(include=["channels_neffos"]):
    from channels_neffos import envelope
    from channels_neffos.engine import NeffosChannelLayer
    from channels_neffos.process import LayerProcess
    from channels_neffos.transports.base import OnMessage, Transport, TransportEvents

#: Names the seed corpus uses, so the fuzzer starts from messages that reach real state.
PID = "f00dfeedbeef"
OTHER_PID = "0123456789ab"
CHANNEL = f"specific.{PID}!inbox"
WORKER_CHANNEL = "tasks"
GROUP = "room"
REPLY_TO = f"fuzz:{PID}:r:0011223344556677"
#: How often the fetcher may find its queue empty before it counts as stuck.
_EMPTY_POPS_ALLOWED = 20


class StuckReader(Exception):
    """The worker-channel fetcher kept polling after its only receiver was gone."""


class MemoryTransport(Transport):
    """A broker that only remembers: publishes are counted, one queue yields what it is given."""

    url = "memory://fuzz"
    max_payload = 1 << 20

    def __init__(self) -> None:
        self.published = 0
        self.subscribed: dict[str, OnMessage] = {}
        self.queue: list[bytes] = []
        self.on_empty: Any = None
        self.empty_pops = 0

    def subject(self, *parts: str) -> str:
        return ":".join(parts)

    def wildcard(self, *parts: str) -> str:
        return ":".join((*parts, "*"))

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def subscribe(self, subject: str, on_message: OnMessage) -> None:
        self.subscribed[subject] = on_message

    async def unsubscribe(self, subject: str) -> None:
        self.subscribed.pop(subject, None)

    async def publish(self, subject: str, payload: bytes, reply_to: str | None = None) -> None:
        self.published += 1

    async def publish_request(self, subject: str, payload: bytes, reply_to: str) -> int | None:
        self.published += 1
        return 1

    async def queue_push(
        self, name: str, payload: bytes, capacity: int, ttl: float, reply_to: str | None = None
    ) -> bool:
        self.queue.append(payload)
        return True

    async def queue_pop(self, name: str, timeout: float, capacity: int) -> bytes | None:
        if self.queue:
            return self.queue.pop(0)
        self.empty_pops += 1
        if self.empty_pops > _EMPTY_POPS_ALLOWED:
            raise StuckReader(f"the fetcher of {name} polls on with no receiver waiting")
        if self.on_empty is not None:
            self.on_empty()  # the receiver gives up: the fetcher must stop
        await asyncio.sleep(0)
        return None

    async def queue_flush(self) -> None:
        self.queue.clear()


class MemoryLayer(NeffosChannelLayer):
    broker_name = "memory"

    def make_transport(self, events: TransportEvents) -> Transport:
        return MemoryTransport()


LAYER = MemoryLayer(prefix="fuzz")


class _Problems(logging.Handler):
    """ERROR records of channels_neffos while one input runs: failed background tasks."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))


async def _feed(data: bytes, problems: list[str]) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: problems.append(repr(context)))
    process = LayerProcess(LAYER, pid=PID)
    await process.start()
    transport = process.transport
    assert isinstance(transport, MemoryTransport)  # noqa: S101 - the harness, not the input
    process.mailbox(CHANNEL, capacity=1)
    process.groups[GROUP] = {CHANNEL: monotonic() + 3600}
    pending: asyncio.Future[envelope.Envelope] = loop.create_future()
    process.replies.pending[REPLY_TO] = pending
    try:
        # One payload popped from a worker channel while one receiver waits (first, while the
        # worker channel's mailbox is empty).
        worker = process.mailbox(WORKER_CHANNEL)
        receiver = asyncio.ensure_future(worker.get())
        await asyncio.sleep(0)
        transport.queue.append(data)
        transport.on_empty = receiver.cancel
        await process._fetch_worker_messages(WORKER_CHANNEL, worker)
        await asyncio.gather(receiver, return_exceptions=True)

        process._on_process_message(data)
        process._on_group_message(data)

        for _ in range(5):  # let scheduled replies and membership changes run
            await asyncio.sleep(0)
        # What receive() and ask() would make of what got through.
        for mailbox in list(process.mailboxes.values()):
            while (body := mailbox.get_nowait()) is not None:
                try:
                    envelope.unpack_body(body)
                except ValueError:
                    pass
        if pending.done() and not pending.cancelled():
            try:
                envelope.unpack_reply(pending.result().body)
            except ValueError:
                pass
    finally:
        process.replies.pending.pop(REPLY_TO, None)
        await process.close()


def TestOneInput(data: bytes) -> None:
    handler = _Problems()
    logger = logging.getLogger("channels_neffos")
    logger.addHandler(handler)
    problems: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_feed(data, problems))
    finally:
        loop.close()
        logger.removeHandler(handler)
    problems += handler.seen
    if problems:
        raise AssertionError("\n".join(problems))


def main() -> None:
    # Drop warnings are expected on every run; keep stderr for crashes.
    logging.getLogger("channels_neffos").setLevel(logging.ERROR)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
