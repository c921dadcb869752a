"""Fuzz target: a raw broker payload into a running router (:mod:`channels_neffos._core.router`).

The bytes go where a transport hands them — the real entry points for broker messages:

* ``_on_process_message`` (the process's wildcard subscription: channel messages, asks, replies,
  membership changes),
* ``_on_group_message`` (a group subscription),
* the worker-channel fetcher (one payload popped from a queue),

on a router whose broker is the in-memory one (``channels_neffos.testing.memory``), with a
channel that has a mailbox of capacity 1, a group member and a pending reply, so valid-looking
input reaches real paths. Then the event loop runs what the message scheduled (replies, group
changes), and what was delivered is decoded as ``receive()`` and ``ask()`` would (only
``ValueError`` allowed).

A crash is any exception out of those entry points, a fetcher that does not finish (a stuck
reader), an ERROR log record from ``channels_neffos`` (a failed background task) or an exception
reported to the event loop. Garbage must end as a counted drop (``layer.counters``), nothing else.

Run: ``.venv/bin/python fuzz/fuzz_process.py fuzz/corpus/process -max_total_time=60``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from time import monotonic

import atheris

with atheris.instrument_imports(include=["channels_neffos"]):
    from channels_neffos import envelope
    from channels_neffos._core.router import Router, RouterHooks
    from channels_neffos._core.settings import LayerSettings
    from channels_neffos._drops import DropLog
    from channels_neffos.testing.memory import MemoryBroker, MemoryTransport
    from channels_neffos.transports.base import Subject, Transport, TransportEvents

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


class FuzzTransport(MemoryTransport):
    """The in-memory transport, with one worker queue that yields what the fuzzer gives it."""

    def __init__(self, events: TransportEvents) -> None:
        super().__init__(MemoryBroker("fuzz"), events, "fuzz")
        self.queue: list[bytes] = []
        self.on_empty: object = None
        self.empty_pops = 0

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        if self.queue:
            return self.queue.pop(0)
        self.empty_pops += 1
        if self.empty_pops > _EMPTY_POPS_ALLOWED:
            raise StuckReader(f"the fetcher of {queue.name} polls on with no receiver waiting")
        if callable(self.on_empty):
            self.on_empty()  # the receiver gives up: the fetcher must stop
        await asyncio.sleep(0)
        return None


SETTINGS = LayerSettings(
    prefix="fuzz",
    expiry=60,
    group_expiry=86400,
    capacity=100,
    channel_capacity=(),
    presence=False,
    broker_name="memory",
)
COUNTERS: Counter[str] = Counter()
HOOKS = RouterHooks(
    counters=COUNTERS,
    drop=DropLog(COUNTERS),
    connection_lost=lambda *_: None,
    connection_restored=lambda *_: None,
    report=dict,
)


def _transport(events: TransportEvents) -> Transport:
    return FuzzTransport(events)


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
    router = Router(SETTINGS, PID, _transport, HOOKS)
    await router.start()
    transport = router.transport
    assert isinstance(transport, FuzzTransport)  # noqa: S101 - the harness, not the input
    router.mailboxes.open(CHANNEL, capacity=1)
    router.groups.members[GROUP] = {CHANNEL: monotonic() + 3600}
    pending: asyncio.Future[envelope.Envelope] = loop.create_future()
    router.requests.pending[REPLY_TO] = pending
    try:
        # One payload popped from a worker channel while one receiver waits (first, while the
        # worker channel's mailbox is empty).
        worker = router.mailboxes.open(WORKER_CHANNEL)
        receiver = asyncio.ensure_future(worker.get())
        await asyncio.sleep(0)
        transport.queue.append(data)
        transport.on_empty = receiver.cancel
        await router.fetchers._fetch(WORKER_CHANNEL, worker)
        await asyncio.gather(receiver, return_exceptions=True)

        router._on_process_message(data)
        router._on_group_message(data)

        for _ in range(5):  # let scheduled replies and membership changes run
            await asyncio.sleep(0)
        # What receive() and ask() would make of what got through.
        for mailbox in router.mailboxes.all():
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
        router.requests.pending.pop(REPLY_TO, None)
        await router.close()


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
