"""The router of a layer with a ``history`` option: history groups on top of the plain routing.

A :class:`HistoryRouter` is a :class:`~.router.Router` that, for a group matching the layer's
``history`` option, sends through a :class:`~.history_writer.HistoryWriter` (the broker gives each
message its position and publishes it; nothing is delivered locally first) and delivers through
a :class:`~.history.Sequencer` (offset order, holes filled from history or marked). Groups that
match no rule are routed exactly as by a plain router. A layer without the option gets a plain
:class:`~.router.Router`, so its hottest path, ``group_send``, takes no history branch at all.

What is delivered, lost and in which order: :mod:`.history` and ``docs/history.rst``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from .. import envelope
from ..envelope import GROUP, Envelope
from ..transports.base import HistoryLimits, HistorySlice, Transport, TransportEvents
from .history import Sequencer, parse_since, recovered
from .history_writer import HistoryWriter
from .router import _ROUTE_CACHE_SIZE, Router, RouterHooks, State
from .settings import LayerSettings


class HistoryRouter(Router):
    """A :class:`~.router.Router` with history groups (see the module docstring)."""

    def __init__(
        self,
        settings: LayerSettings,
        pid: str,
        make_transport: Callable[[TransportEvents], Transport],
        hooks: RouterHooks,
    ) -> None:
        super().__init__(settings, pid, make_transport, hooks)
        self.history = HistoryWriter(self.transport.history_append, hooks.drop)
        self.sequencer = Sequencer(
            self._deliver_in_order, self._read_since, self.background.spawn, hooks.drop
        )
        self._history_limits: dict[str, HistoryLimits | None] = {}

    async def close(self) -> None:
        if self.state not in (State.CLOSING, State.CLOSED):
            self.history.write()  # what this turn sent to history groups, before the drain
            self.history.abandon()  # what waited for an unreachable broker: counted
        await super().close()

    def _connection_restored(self) -> None:
        super()._connection_restored()
        if self.state is State.RUNNING:
            self.history.restored()  # what was sent while the connection was down
            self.sequencer.catch_up()  # what history groups missed while the connection was down

    def history_limits(self, group: str) -> HistoryLimits | None:
        """``group``'s history limits, ``None`` for a plain group (remembered per group)."""
        try:
            return self._history_limits[group]
        except KeyError:
            if len(self._history_limits) >= _ROUTE_CACHE_SIZE:
                self._history_limits.clear()
            limits = self._history_limits[group] = self.settings.history_for(group)
            return limits

    # -- sending -------------------------------------------------------------------------------

    def group_send(self, group: str, body: bytes, exclude: str | None) -> Awaitable[None] | None:
        limits = self.history_limits(group)
        if limits is None:
            return super().group_send(group, body, exclude)
        if len(body) > self.max_body:
            self.check_size(body)
        if b"__position__" in body and envelope.POSITION_KEY in envelope.unpack_body(body):
            raise ValueError(
                f"a message to history group {group!r} must not carry the reserved key "
                f"{envelope.POSITION_KEY!r}: its position is given by the broker"
            )
        # To the broker first, local members included: the broker gives it its position.
        payload = envelope.encode(Envelope(GROUP, self.pid, group, body, None, None, exclude))
        self.history.send(group, self.names.history(group), limits, payload)
        return None

    # -- receiving -----------------------------------------------------------------------------

    async def _subscribe_group(self, group: str) -> None:
        limits = self.history_limits(group)
        if limits is not None:
            subject = self.names.history(group)
            # The position before subscribing: every later message reaches the members, from
            # history if the new subscription misses it.
            latest = await self.transport.history_read(subject, None, 1, limits)
            self.sequencer.begin(group, latest.epoch, latest.offset)
            await self.transport.subscribe(subject, partial(self.sequencer.on_batch, group))
        await super()._subscribe_group(group)  # asks to the group travel on the plain subject

    async def _unsubscribe_group(self, group: str) -> None:
        await super()._unsubscribe_group(group)
        if self.history_limits(group) is not None:
            await self.transport.unsubscribe(self.names.history(group))
            self.sequencer.forget(group)

    def _deliver_in_order(self, group: str, body: bytes, exclude: str | None) -> None:
        members = self.groups.recipients(group)
        if members:
            self.mailboxes.deliver_many(members, body, exclude)

    def _read_since(self, group: str, since: int) -> Awaitable[HistorySlice]:
        limits = self.history_limits(group)
        if limits is None:
            raise ValueError(f"{group!r} is not a history group")
        return self.transport.history_read(self.names.history(group), since, None, limits)

    # -- reading -------------------------------------------------------------------------------

    async def group_history(
        self, group: str, limits: HistoryLimits, since: Any, limit: int | None
    ) -> tuple[HistorySlice, bool]:
        """What ``group``'s history holds after ``since`` (a position as delivered, or
        ``None``: the last ``limit``), and whether that is all that followed ``since``."""
        position = parse_since(since)
        subject = self.names.history(group)
        found = await self.transport.history_read(
            subject, None if position is None else position[1], limit, limits
        )
        if position is not None and found.epoch != position[0]:
            # Another epoch: ``since`` means nothing here; give what is kept, not recovered.
            found = await self.transport.history_read(subject, None, limit, limits)
            return found, False
        return found, recovered(found, position)
