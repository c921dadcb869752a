"""A group's history on NATS: one JetStream stream per prefix, offsets kept contiguous by the
server's compare-and-set on each group's last message.

Stream ``P_history`` (file storage, replicated on a cluster of three or more servers) takes the
subjects ``P.hs.>``: a history group ``G`` stores its batches on ``P.hs.G``, and the stream
*republishes* every message it stored to ``P.h.G`` — the subject the processes with members of
``G`` subscribe (core NATS). So members receive only what was stored, in the stream's order.

**Offsets.** Each stored message is one batch, in the positioned format of
:func:`~channels_neffos.transports.base.pack_positioned` (``<epoch>:<first offset>:...``). A
process appends a batch with ``Nats-Expected-Last-Subject-Sequence`` set to the stream
sequence of ``G``'s last batch: JetStream stores it only if no other batch was stored for ``G``
meanwhile, so offsets follow on with no hole and no overlap, whichever processes send. Each
process remembers the sequence, epoch and last offset of the groups it appended to; when the
server refuses (another process appended first) it reads ``G``'s last batch (a direct get) and
tries again. A group with no batch kept — new, or every batch older than the stream's
``max_age`` — starts a new epoch at offset 1 (so on NATS a group's position lives as long as its
last message: ``meta_ttl`` is the message ``ttl``). One append per group is in flight per
process, so a process's batches keep its send order.

**Bounds.** The stream keeps ``max_msgs_per_subject`` *batches* per group and drops them after
``max_age``: the largest ``size`` and ``ttl`` of any history rule (raised when a process with a
larger rule starts; never lowered). Each read applies the group's own ``size`` (the last
``size`` messages) and ``ttl`` (by the time the stream stored each batch).

**Reading.** One batched direct get (``$JS.API.DIRECT.GET.P_history``, NATS ≥ 2.11) returns a
group's kept batches in one round trip.

**Closing.** Appends run in tasks, which need nats-py's reader for their acknowledgements. A
loop closed by ``asyncio.run`` or ``async_to_sync`` cancels every task first — nats-py's reader
too — so :meth:`NatsHistory.close` finishes what is still queued on a short-lived connection of
its own, instead of losing it (counted as ``history_unwritten`` if even that fails).

Permissions: ``$JS.API.STREAM.CREATE/UPDATE/INFO.P_history`` and ``$JS.API.DIRECT.GET.P_history``
(:func:`channels_neffos.security.nats_permissions`); publishes and answers stay under ``P.``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from ..exceptions import BrokerUnavailable
from .base import (
    HistoryLimits,
    HistorySlice,
    Subject,
    TransportEvents,
    pack_positioned,
    unpack_positioned,
)
from .nats_registry import replicas_for

logger = logging.getLogger("channels_neffos.nats")

#: JetStream's answers to a publish whose expected last subject sequence is not the last one
#: (with the sequence; and without, as a clustered stream answers).
_WRONG_LAST_SEQUENCE = frozenset((10071, 10164))
#: How long one JetStream call may take.
_API_TIMEOUT = 5.0
#: How often an append is tried again after another process appended first.
_CONTENDED_TRIES = 50
#: The most messages (and bytes) queued appends of a group are merged into.
_MERGE_MESSAGES = 512
_MERGE_BYTES = 256 * 1024
#: How long closing waits for queued appends.
_CLOSE_WAIT = 5.0
#: How long an append waits for a stream that no server answers for yet: a new stream on a
#: cluster has no leader for a moment, and nats-server's elections take 4-9 s.
_READY_WAIT = 10.0


def stream_name(prefix: str) -> str:
    return f"{prefix}_history"


class _NotAnswering(Exception):
    """The history stream exists but did not answer a direct get (yet)."""


@dataclass
class _Chain:
    """One group's appends waiting, oldest first, and the task working through them."""

    batches: list[tuple[list[bytes], HistoryLimits, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class NatsHistory:
    """The history of a prefix's groups on one NATS connection (see the module docstring)."""

    def __init__(
        self,
        client: Callable[[], Client],
        open_client: Callable[[], Awaitable[Client]],
        prefix: str,
        escaped_prefix: str,
        url: str,
        events: TransportEvents,
    ) -> None:
        self._client = client
        self._open_client = open_client
        self._stream = stream_name(prefix)
        self._live = f"{escaped_prefix}.h."
        self._store = f"{escaped_prefix}.hs."
        self._url = url
        self._events = events
        self._chains: dict[str, _Chain] = {}
        #: store subject -> (stream sequence, epoch, offset) of the group's last batch
        self._last: dict[str, tuple[int, str, int]] = {}
        #: (size, ttl) the stream was last seen or made with.
        self._applied: tuple[int, float] | None = None
        #: A task that only waits: cancelled when every task of the loop is (asyncio.run).
        self._alive: asyncio.Task[None] | None = None

    def store_subject(self, subject: Subject) -> str:
        return self._store + subject.name[len(self._live) :]

    # -- appending -----------------------------------------------------------------------------

    def append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        self._client_or_raise()
        loop = asyncio.get_running_loop()
        if self._alive is None:
            self._alive = loop.create_task(_forever(), name="channels_neffos history alive")
        store = self.store_subject(subject)
        chain = self._chains.setdefault(store, _Chain())
        chain.batches.append((payloads, limits, epoch))
        if chain.task is None or chain.task.done():
            chain.task = loop.create_task(self._work(store, chain, self._client))

    def _client_or_raise(self) -> Client:
        client = self._client()
        if not client.is_connected:
            raise BrokerUnavailable(self._url, "not connected (reconnecting)")
        return client

    async def _work(self, store: str, chain: _Chain, client: Callable[[], Client]) -> None:
        while chain.batches:
            # What queued while the last append waited for its acknowledgement goes as one.
            payloads, limits, epoch = chain.batches[0]
            taken, size = 1, sum(map(len, payloads))
            for more, _, _ in chain.batches[1:]:
                grown = size + sum(map(len, more))
                if len(payloads) + len(more) > _MERGE_MESSAGES or grown > _MERGE_BYTES:
                    break
                payloads, size, taken = payloads + more, grown, taken + 1
            try:
                await self._append(client(), store, payloads, limits, epoch)
            except asyncio.CancelledError:
                raise  # the batches stay queued: close() finishes them
            except Exception as exc:
                self._events.dropped("history_unwritten", f"{store} ({self._url}): {exc}")
                for _ in payloads[1:]:
                    self._events.dropped("history_unwritten", store)
            del chain.batches[:taken]

    async def _append(
        self, client: Client, store: str, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        js = client.jetstream(timeout=_API_TIMEOUT)
        deadline = asyncio.get_running_loop().time() + _READY_WAIT
        pause = 0.05
        contended = 0
        while True:
            try:
                await self._ensure_stream(js, client, limits)
                last = self._last.get(store)
                if last is None:
                    last = await self._read_last(js, store, epoch)
                sequence, group_epoch, offset = last
                data = pack_positioned(group_epoch, offset + 1, payloads)
                headers = {"Nats-Expected-Last-Subject-Sequence": str(sequence)}
                try:
                    ack = await js.publish(store, data, stream=self._stream, headers=headers)
                except nats.errors.TimeoutError:
                    # Stored or not? Its acknowledgement is lost: the group's last batch says.
                    self._last.pop(store, None)
                    stored = await self._stored_last(js, store, data)
                    if stored is None:
                        raise
                    ack = stored
            except nats.js.errors.APIError as exc:
                self._last.pop(store, None)
                if exc.err_code not in _WRONG_LAST_SEQUENCE:
                    raise
                contended += 1  # another process appended first: read its batch, try again
                if contended == _CONTENDED_TRIES:
                    raise BrokerUnavailable(
                        self._url, f"{_CONTENDED_TRIES} appends to {store} lost the race"
                    ) from exc
                continue
            except (
                nats.errors.NoRespondersError,
                nats.js.errors.NoStreamResponseError,
                nats.errors.TimeoutError,
            ) as exc:
                # No stream takes the subject yet, or none answers in time: just made (a cluster
                # elects its leader), deleted, or the server lost its store. Make sure it
                # exists, and wait.
                self._last.pop(store, None)
                self._applied = None
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise BrokerUnavailable(self._url, f"no stream takes {store}: {exc}") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            self._last[store] = (ack.seq, group_epoch, offset + len(payloads))
            return

    async def _stored_last(self, js: JetStreamContext, store: str, data: bytes) -> Any | None:
        """The group's last batch (its ``.seq`` is as an acknowledgement's) if it is ``data``."""
        try:
            message = await js.get_last_msg(self._stream, store, direct=True)
        except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):
            return None
        return message if message.data == data else None

    async def _read_last(
        self, js: JetStreamContext, store: str, epoch: str
    ) -> tuple[int, str, int]:
        """(sequence, epoch, last offset) of the group's last kept batch; a new epoch at 0."""
        try:
            message = await js.get_last_msg(self._stream, store, direct=True)
        except nats.js.errors.NotFoundError:
            return 0, epoch, 0
        group_epoch, first, payloads = unpack_positioned(message.data or b"")
        return int(message.seq or 0), group_epoch, first + len(payloads) - 1

    async def _ensure_stream(
        self, js: JetStreamContext, client: Client, limits: HistoryLimits
    ) -> None:
        wanted = (limits.size, limits.ttl)
        applied = self._applied
        if applied is not None and applied[0] >= wanted[0] and applied[1] >= wanted[1]:
            return
        try:
            info = await js.stream_info(self._stream)
            config = info.config
            size = max(config.max_msgs_per_subject or 0, limits.size)
            ttl = max(config.max_age or 0.0, limits.ttl)
            if (size, ttl) != (config.max_msgs_per_subject, config.max_age):
                config.max_msgs_per_subject, config.max_age = size, ttl
                await js.update_stream(config)
        except nats.js.errors.NotFoundError:
            size, ttl = wanted
            await js.add_stream(self._config(client, size, ttl))
        self._applied = (size, ttl)

    def _config(self, client: Client, size: int, ttl: float) -> StreamConfig:
        return StreamConfig(
            name=self._stream,
            subjects=[self._store + ">"],
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_msgs_per_subject=size,
            max_age=ttl,
            num_replicas=replicas_for(client),
            allow_direct=True,
            republish=RePublish(src=self._store + ">", dest=self._live + ">"),
        )

    async def close(self) -> None:
        """Finish what is queued: on this connection if its reader still runs, else on a
        short-lived one (see the module docstring); what fails is counted."""
        chains = [chain for chain in self._chains.values() if chain.batches]
        tasks = [chain.task for chain in chains if chain.task is not None and not chain.task.done()]
        if tasks and (self._alive is None or not self._alive.done()):
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._alive is not None:
            self._alive.cancel()
            await asyncio.gather(self._alive, return_exceptions=True)
        left = {store: chain for store, chain in self._chains.items() if chain.batches}
        if not left:
            return
        try:
            client = await asyncio.wait_for(self._open_client(), _CLOSE_WAIT)
        except (BrokerUnavailable, asyncio.TimeoutError) as exc:
            for store, chain in left.items():
                for payloads, _, _ in chain.batches:
                    for _ in payloads:
                        self._events.dropped("history_unwritten", f"{store}: {exc}")
            return
        try:
            work = [self._work(store, chain, lambda: client) for store, chain in left.items()]
            await asyncio.wait_for(asyncio.gather(*work), _CLOSE_WAIT)
        except asyncio.TimeoutError:
            for store, chain in left.items():
                for payloads, _, _ in chain.batches:
                    for _ in payloads:
                        self._events.dropped("unconfirmed", store)
        finally:
            await client.close()

    # -- reading -------------------------------------------------------------------------------

    async def read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        client = self._client_or_raise()
        store = self.store_subject(subject)
        # A stream just made (or recovering after a restart) may not answer direct gets for a
        # moment: try again for a while before calling it an outage.
        deadline = asyncio.get_running_loop().time() + _READY_WAIT
        while True:
            try:
                batches = await self._batches(client, store)
                break
            except _NotAnswering as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerUnavailable(self._url, f"reading history: {exc}") from None
                await asyncio.sleep(0.05)
        if not batches:
            return HistorySlice(None, 0, [])
        epoch = batches[-1][1]
        cutoff = datetime.now(timezone.utc).timestamp() - limits.ttl
        entries: list[tuple[int, bytes]] = []
        for stored_at, batch_epoch, first, payloads in batches:
            if batch_epoch != epoch or stored_at < cutoff:
                continue
            entries += [(first + index, payload) for index, payload in enumerate(payloads)]
        latest = batches[-1][2] + len(batches[-1][3]) - 1
        entries = [entry for entry in entries if entry[0] > latest - limits.size]
        if since is not None:
            entries = [entry for entry in entries if entry[0] > since][:limit]
        elif limit:
            entries = entries[-limit:]
        return HistorySlice(epoch, latest, entries)

    async def _stream_exists(self, client: Client) -> bool:
        try:
            await client.jetstream(timeout=_API_TIMEOUT).stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise _NotAnswering(str(exc)) from None  # a cluster electing the stream's leader
        except nats.errors.Error as exc:
            raise BrokerUnavailable(self._url, exc) from exc
        return True

    async def _batches(
        self, client: Client, store: str
    ) -> list[tuple[float, str, int, list[bytes]]]:
        """Every kept batch of ``store``, oldest first: (stored at, epoch, first, payloads)."""
        inbox = client.new_inbox()
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            arrived.put_nowait(msg)

        subscription = await client.subscribe(inbox, cb=collect)
        found: list[tuple[float, str, int, list[bytes]]] = []
        try:
            request = {"seq": 1, "next_by_subj": store, "batch": 1_000_000}
            await client.publish(
                f"$JS.API.DIRECT.GET.{self._stream}", json.dumps(request).encode(), reply=inbox
            )
            while True:
                msg = await asyncio.wait_for(arrived.get(), _API_TIMEOUT)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404" and not found:
                    return []  # the stream holds nothing for the group
                if status == "204":  # the end of the batch
                    break
                if status == "503" and not found and not await self._stream_exists(client):
                    return []  # no stream yet: no group has history
                if status is not None:  # the stream exists but does not answer (yet)
                    raise _NotAnswering(f"{status} {headers.get('Description', '')}")
                epoch, first, payloads = unpack_positioned(msg.data)
                found.append(
                    (_timestamp(headers.get("Nats-Time-Stamp", "")), epoch, first, payloads)
                )
        except asyncio.TimeoutError as exc:
            raise BrokerUnavailable(self._url, "reading history timed out") from exc
        except nats.errors.Error as exc:
            raise BrokerUnavailable(self._url, exc) from exc
        finally:
            await subscription.unsubscribe()
        return found


async def _forever() -> None:
    await asyncio.Event().wait()


def _timestamp(text: str) -> float:
    """Seconds since the epoch of a JetStream time stamp (RFC 3339, nanoseconds, ``Z``)."""
    if not text:
        return float("inf")  # unknown: keep it
    day_and_time, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.strptime(day_and_time, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
