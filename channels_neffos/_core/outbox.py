"""Coalescing publishes: a burst of messages for one receiver leaves as one broker message.

Every publish of a router (:mod:`.router`) goes through its :class:`Outbox`. The broker, the
client library and the receiving process all pay per broker message — a RESP reply to parse, a
``Msg`` object, a callback — far more than per byte, so a producer that sends many messages to
one process's channels (or to one group) in a row should not pay that for each of them.

Semantics:

* **Nothing waits that would not have waited anyway.** The first publish of an event-loop turn
  leaves at once, exactly as without an outbox: a lone ``send()``, a ping-pong or an ask reply is
  never delayed. Only further publishes *in the same turn* are collected; they leave when the turn
  ends (the loop gets control back), or as soon as :data:`FRAME_BYTES` are collected.
* **Order is kept exactly.** Collected messages form *frames*; a new frame starts whenever the
  *frame key* changes, and frames leave in the order they were started. So this process's
  publishes reach the broker in the order they were made, per subject and across subjects.
* **Frame keys.** Messages share a frame only if they are consecutive and have the same key: the
  owning pid for process channels (every channel of a process is under its one subscription, and
  each envelope names its target channel), the subject for anything else (a group, a reply
  inbox, a NATS worker channel). A frame is published on the subject of its first message.
* **Frames are a wire format** (``docs/wire.rst``): a frame of one message is the bare envelope;
  a frame of several is a msgpack array of envelopes (:func:`channels_neffos.envelope.frame`).
  A frame never exceeds :data:`FRAME_BYTES` unless it holds a single larger message.
* **Loss is counted.** A frame that cannot be handed to the broker (connection down) loses every
  message in it; they are reported to ``on_lost`` (the router counts them as ``broker_down``
  and logs them), never silently.
* **Back-pressure.** After each :data:`FRAME_BYTES` collected, the publisher hands its frames to
  the transport and gives the event loop a turn, so that readers in this process (and the
  socket) keep up with a producer that never awaits anything else.

The outbox relies on one promise of :meth:`Transport.publish
<channels_neffos.transports.base.Transport.publish>`: the payload is queued, in order, before the
call first suspends. That is what lets a publish made while another one is suspended go behind it.
The outbox is given that method and nothing else of the transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .. import envelope
from .._aio import log_failure
from ..transports.base import Subject

logger = logging.getLogger("channels_neffos")

Publish = Callable[[Subject, bytes], Awaitable[None]]

#: The largest frame the outbox builds from several messages, in bytes, and how much it collects
#: before handing frames to the transport and yielding.
FRAME_BYTES = 64 * 1024


#: The most a msgpack array header adds to a frame.
_ARRAY_HEADER_BYTES = 5


class _Frame:
    __slots__ = ("key", "payloads", "size", "subject")

    def __init__(self, subject: Subject, payload: bytes, key: str) -> None:
        self.subject = subject
        self.key = key
        self.payloads = [payload]
        self.size = len(payload)


class Outbox:
    """Publishes of one process to one transport, coalesced per frame key within a loop turn."""

    def __init__(self, publish: Publish, on_lost: Callable[[Subject, int], None]) -> None:
        self._publish = publish  # the transport's publish
        #: Called with (subject, how many messages) when a frame could not be published.
        self._on_lost = on_lost
        #: The largest frame to build of several messages: at most the broker's max payload
        #: (set once connected; FRAME_BYTES until then).
        self.max_frame = FRAME_BYTES
        #: How many messages were handed to the broker (in frames), for stats.
        self.published = 0
        self._frames: deque[_Frame] = deque()
        self._collected = 0
        self._turn_open = False
        self._sending: asyncio.Task[None] | None = None

    @property
    def collected(self) -> int:
        """How many messages wait for the end of this turn."""
        return sum(len(frame.payloads) for frame in self._frames)

    def collect(self, subject: Subject, payload: bytes, key: str | None = None) -> bool:
        """Add ``payload`` to this turn's frames if it may wait for the end of the turn.

        ``key`` is its frame key (default: the subject). ``False`` if it may not wait — it is
        the first of its turn, or a frame's worth is collected — and the caller must ``await``
        :meth:`publish` instead. Lets a hot caller skip the cost of a coroutine per message.
        """
        if (not self._frames and not self._turn_open) or (
            self._collected + len(payload) >= FRAME_BYTES
        ):
            return False
        self._add(subject, payload, key or subject.name)
        return True

    def _add(self, subject: Subject, payload: bytes, key: str) -> None:
        size = len(payload)
        frames = self._frames
        last = frames[-1] if frames else None
        if (
            last is not None
            and last.key == key
            # max_payload is known once connected; leave room for the frame's array header
            and last.size + size + _ARRAY_HEADER_BYTES <= self.max_frame
        ):
            last.payloads.append(payload)
            last.size += size
        else:
            frames.append(_Frame(subject, payload, key))
        self._collected += size

    async def publish(self, subject: Subject, payload: bytes, key: str | None = None) -> None:
        """Publish one encoded envelope to ``subject`` (at once, or with this turn's frames)."""
        key = key or subject.name
        if self.collect(subject, payload, key):
            return
        if not self._frames and not self._turn_open:
            # The first publish of this turn: no reason to wait for company.
            self._turn_open = True
            asyncio.get_running_loop().call_soon(self._end_turn)
            await self._send(subject, payload, 1)
            return
        # A frame's worth is collected: hand it over with this one, then let the loop run.
        self._add(subject, payload, key)
        await self.flush()
        await asyncio.sleep(0)

    def _end_turn(self) -> None:
        self._turn_open = False
        if self._frames and self._sending is None:
            sending = asyncio.get_running_loop().create_task(self._flush_in_background())
            sending.add_done_callback(
                lambda task: log_failure(logger, "handing collected messages to the broker", task)
            )
            self._sending = sending

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        finally:
            self._sending = None

    async def flush(self) -> None:
        """Hand every collected frame to the transport, oldest first."""
        frames = self._frames
        while frames:
            frame = frames.popleft()
            self._collected -= frame.size
            await self._send(frame.subject, envelope.frame(frame.payloads), len(frame.payloads))

    async def _send(self, subject: Subject, payload: bytes, count: int) -> None:
        try:
            await self._publish(subject, payload)
        except ConnectionError:
            self._on_lost(subject, count)
        else:
            self.published += count

    async def close(self) -> None:
        """Send what is collected (best effort) and finish the background sender."""
        await self.flush()
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
