"""Process-level fan-out: one layer channel per process receives every broadcast for its clients.

A :class:`Hub` lives per channel layer and event loop — one per server process. It knows which
local connections are in which namespace and room, and it, not each connection, is the member of
the Channels groups ``ns.<namespace>`` and ``ns.<namespace>.r.<room>`` (see :mod:`.groups`):

* **Once per process.** A broadcast (:func:`.server.broadcast`, ``Namespace.broadcast``) is one
  ``group_send`` of a frame the sender serialized once. Each process with members receives it
  once, on the hub's channel, and pushes that same frame to every local member's
  :class:`~.outgoing.Outgoing` — no per-connection mailbox, ``receive()`` or ``dispatch()``.
* **Checks.** Only connections connected to the namespace (and, for a room event, joined to the
  room) are members of that scope here: neffos' write check. The excluded connection (the
  sender, unless ``include_self``) is skipped on every instance.
* **Membership.** ``join`` returns once the process is in the group (so a broadcast sent anywhere
  afterwards reaches the connection); ``leave`` stops delivery at once. The hub joins a group
  when its first local member arrives and leaves it with its last; it renews its memberships
  every ``group_expiry / 2`` seconds, so long-lived connections never expire. The hub's channel
  and its reader task exist only while the hub has members: nothing outlives the connections.
* **Presence.** Each member carries its connection's ``presence_info`` (a :class:`Member`, shared
  by all the scopes of one connection, so a change shows everywhere at once). The hub answers
  asks of type ``neffos.presence`` (:mod:`.presence`) with its local members of the scope as they
  are when the ask arrives: a member is listed from the moment ``join`` starts until ``leave``
  (or ``leave_all``, which a closing connection calls before anything else) is called.
* **Positions.** A broadcast of a history room (see :mod:`.recovery`) is pushed with its
  position in the frame's wait field to members whose client asked for positions, and as it is
  to the others; while a member's replay is being written, its live frames of that room are
  held and then released past what the replay covered.
* **Order and loss** are the channel layer's: at-most-once, FIFO per sender (see
  ``docs/semantics.rst``). The hub's channel holds :data:`HUB_CAPACITY` messages; it is drained
  without awaiting any client, so it only fills if this process cannot keep up at all (drops are
  counted by the layer as ``channel_full``).

Messages of other types (and presence messages that are not asks) sent to these groups reach no
consumer: they are dropped, counted in ``namespaces.counters["not_a_frame"]`` and logged
(rate-limited). Send neffos frames with :mod:`.server`, or use a group of your own.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from typing import Any

from .._aio import SharedAttempt
from .._drops import RateLimitedLog
from ..envelope import POSITION_KEY
from ..exceptions import MessageTooLarge
from ..stats import LARGEST_GROUPS, add_reporter
from .outgoing import Frame, Outgoing, counters
from .presence import PRESENCE_TYPE, scope_group
from .recovery import is_taggable, tagged
from .server import FRAME_TYPE

logger = logging.getLogger("channels_neffos.namespaces")
_unexpected = RateLimitedLog(logger, logging.WARNING)
_failed = RateLimitedLog(logger, logging.ERROR)

#: Messages the hub's channel holds (the ``capacity`` extension; a whole process's broadcasts).
HUB_CAPACITY = 10_000
_CHANNEL_PREFIX = "neffos.hub"
#: (namespace, room): ``room`` is ``""`` for the namespace itself.
Scope = tuple[str, str]

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub_for(layer: Any) -> Hub:
    """The hub of ``layer`` on the running event loop."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(layer)
    if hub is None:
        hub = hubs[layer] = Hub(layer)
    return hub


def connection_counts() -> Counter[str]:
    """How many connections each namespace has in this OS process, over every hub (for
    metrics; safe to call from another thread: it reads copies)."""
    for _attempt in range(3):  # a loop starting or ending meanwhile changes _hubs: read again
        try:
            counts: Counter[str] = Counter()
            for hubs in list(_hubs.values()):
                for hub in list(hubs.values()):
                    for (namespace, room), members in list(hub.members.items()):
                        if room == "":
                            counts[namespace] += len(members)
            return counts
        except RuntimeError:
            continue
    return Counter()


def scope_sizes(loop: asyncio.AbstractEventLoop, layer: Any) -> dict[Scope, int]:
    """Local connections per (namespace, room) — room ``""``: the namespace itself — of
    ``layer``'s hub on ``loop``; empty if it has none. For stats: it reads a copy."""
    hub = _hubs.get(loop, {}).get(layer)
    if hub is None:
        return {}
    return {scope: len(members) for scope, members in list(hub.members.items()) if members}


def _report(loop: asyncio.AbstractEventLoop, layer: Any) -> dict[str, Any]:
    """What a layer's process snapshot says of the namespaces (see stats.add_reporter)."""
    scopes = scope_sizes(loop, layer)
    rooms = sorted(
        ((f"{namespace}/{room}", size) for (namespace, room), size in scopes.items() if room),
        key=lambda item: (-item[1], item[0]),
    )[:LARGEST_GROUPS]
    return {
        "connections": {namespace: size for (namespace, room), size in scopes.items() if not room},
        "rooms": dict(rooms),
        "namespace_events": dict(counters),
    }


add_reporter(_report)


def _log_failure(task: asyncio.Task[None]) -> None:
    # Callers that await the task see the error too; this covers a clean-up nobody awaits.
    if not task.cancelled() and task.exception() is not None:
        logger.warning("namespaces hub: changing a group membership failed: %r", task.exception())


def _group(scope: Scope) -> str:
    return scope_group(*scope)


class Member:
    """One local connection, as the hub knows it in every scope it is in."""

    __slots__ = ("floor", "held", "info", "outgoing", "positions")

    def __init__(self, outgoing: Outgoing, info: dict[str, Any]) -> None:
        self.outgoing = outgoing
        #: The connection's ``presence_info``, as presence queries report it.
        self.info = info
        #: Whether its client asked for positions (see :mod:`.recovery`): broadcasts of history
        #: groups reach it with their position in the frame's wait field.
        self.positions = False
        #: scope -> positioned broadcasts held while the scope's replay is written to it
        self.held: dict[Scope, list[tuple[dict[str, Any], Frame]]] = {}
        #: scope -> (epoch, offset) its replay covered: broadcasts up to it that reach the hub
        #: only now (its own order was filling a hole) were replayed already; dropped until one
        #: past it comes
        self.floor: dict[Scope, tuple[str | None, int]] = {}

    def hold(self, scope: Scope) -> None:
        """Keep ``scope``'s positioned broadcasts for this member until :meth:`release`."""
        self.held[scope] = []
        self.floor.pop(scope, None)

    def release(self, scope: Scope, epoch: str | None, offset: int) -> None:
        """Write what was held for ``scope`` but what the replay covered (``epoch`` up to
        ``offset``), and deliver the scope live again."""
        self.floor[scope] = (epoch, offset)
        for position, frame in self.held.pop(scope, ()):
            self.push_past_floor(scope, position, frame)

    def push_past_floor(self, scope: Scope, position: dict[str, Any], frame: Frame) -> None:
        """Write ``frame`` unless the scope's replay covered it."""
        floor = self.floor.get(scope)
        if floor is not None:
            if position["epoch"] == floor[0] and position["offset"] <= floor[1]:
                return
            del self.floor[scope]  # the hub delivers in offset order: nothing older follows
        self.outgoing.push(frame)


class Hub:
    """Local members by scope, and the layer channel that receives their broadcasts."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        #: scope -> {connection id -> the connection (its outgoing frames, its presence info)}
        self.members: dict[Scope, dict[str, Member]] = {}
        #: scope -> (its group, the hub channel that is in it)
        self._joined: dict[Scope, tuple[str, str]] = {}
        #: scope -> the work bringing the layer's membership in line with ``members``; one run
        #: at a time per scope, shared by every caller that waits for it
        self._settlers: dict[Scope, SharedAttempt[None]] = {}
        self._settling: set[Scope] = set()  # scopes whose settler is running
        #: The hub's channel, made when the first scope is joined (and again after a stop).
        self._channel = SharedAttempt(self._open_channel)
        self._tasks: list[asyncio.Task[None]] = []
        #: presence answers being sent (they outlive the reader if the hub stops meanwhile)
        self._answers: set[asyncio.Task[None]] = set()

    # -- membership ------------------------------------------------------------------------

    async def join(self, scope: Scope, connection_id: str, member: Member) -> None:
        """Deliver ``scope``'s broadcasts to ``member`` from now on, on every instance."""
        self.members.setdefault(scope, {})[connection_id] = member
        if scope in self._joined and scope not in self._settling:
            return  # the process is in the group already: the common case
        try:
            await self._settler(scope)()
        except BaseException:
            if self._forget(scope, connection_id):
                self._settle(scope)
            raise

    async def leave(self, scope: Scope, connection_id: str) -> None:
        """Stop delivering ``scope``'s broadcasts to this connection (at once)."""
        if self._forget(scope, connection_id):
            await self._settler(scope)()

    def leave_all(self, scopes: list[Scope], connection_id: str) -> list[asyncio.Task[None]]:
        """Leave every scope in ``scopes`` at once (a closing connection); the returned tasks
        bring the layer's group memberships in line."""
        return [self._settle(scope) for scope in scopes if self._forget(scope, connection_id)]

    def _forget(self, scope: Scope, connection_id: str) -> bool:
        """Remove the member; ``True`` if that left ``scope`` without local members."""
        members = self.members.get(scope)
        if members is None or members.pop(connection_id, None) is None or members:
            return False
        del self.members[scope]
        return True

    def _settler(self, scope: Scope) -> SharedAttempt[None]:
        """What joins or leaves ``scope``'s group until that matches whether it has local
        members: one run per scope at a time; a caller that changed ``members`` while a run is
        under way still gets its change applied, because the run checks again before it ends."""
        settler = self._settlers.get(scope)
        if settler is None:
            settler = self._settlers[scope] = SharedAttempt(
                lambda: self._settle_scope(scope), remember=False
            )
        return settler

    def _settle(self, scope: Scope) -> asyncio.Task[None]:
        """:meth:`_settler`'s run, in a task of its own that nobody needs to await."""
        task = asyncio.ensure_future(self._settler(scope)())
        task.add_done_callback(_log_failure)
        return task

    async def _settle_scope(self, scope: Scope) -> None:
        self._settling.add(scope)
        try:
            while True:
                wanted = scope in self.members
                joined = self._joined.get(scope)
                if wanted and joined is None:
                    channel = await self._channel_ready()
                    group = _group(scope)
                    await self.layer.group_add(group, channel)
                    self._joined[scope] = (group, channel)
                elif not wanted and joined is not None:
                    del self._joined[scope]
                    await self.layer.group_discard(*joined)
                else:
                    return
        finally:
            self._settling.discard(scope)
            if scope not in self.members and scope not in self._joined:
                self._settlers.pop(scope, None)  # settled for good: nothing left to remember
            self._stop_if_idle()

    # -- the hub's channel ---------------------------------------------------------------------

    async def _channel_ready(self) -> str:
        return await self._channel()

    async def _open_channel(self) -> str:
        if "capacity" in getattr(self.layer, "extensions", ()):
            channel: str = await self.layer.new_channel(_CHANNEL_PREFIX, capacity=HUB_CAPACITY)
        else:
            channel = await self.layer.new_channel(_CHANNEL_PREFIX)
        self._tasks = [
            asyncio.ensure_future(self._read(channel)),
            asyncio.ensure_future(self._renew_memberships()),
        ]
        return channel

    def _stop_if_idle(self) -> None:
        """No members and no groups: end the reader; a later join starts a new channel."""
        if self.members or self._joined or self._settling:
            return
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._channel.forget()

    async def _read(self, channel: str) -> None:
        receive = self.layer.receive
        while True:
            message = await receive(channel)
            try:
                if message.get("type") == PRESENCE_TYPE and self.layer.is_ask(message):
                    self._answer_presence(message)
                else:
                    self._fan_out(message)
            except Exception:  # a malformed message must not end the reader, nor flood the log
                counters["undeliverable"] += 1
                _failed(
                    "undeliverable",
                    "the namespaces hub could not deliver %d message(s)",
                    exc_info=True,
                )

    def _fan_out(self, message: dict[str, Any]) -> None:
        if message.get("type") != FRAME_TYPE:
            counters["not_a_frame"] += 1
            _unexpected(
                "type",
                "%d message(s) sent to a namespace group were dropped: namespace groups carry "
                "neffos frames only (latest type: %r); use namespaces.server to reach clients",
                message.get("type"),
            )
            return
        scope = (message["namespace"], message["room"])
        members = self.members.get(scope)
        if not members:
            return
        frame = message["frame"]
        exclude = message.get("exclude")
        position = message.get(POSITION_KEY)
        if position is None or not is_taggable(frame):
            for connection_id, member in members.items():
                if connection_id != exclude:
                    member.outgoing.push(frame)
            return
        positioned = tagged(frame, position)  # once, for every member that asked
        for connection_id, member in members.items():
            if connection_id == exclude:
                continue
            if not member.positions:
                member.outgoing.push(frame)
            elif scope in member.held:
                member.held[scope].append((position, positioned))
            elif member.floor:
                member.push_past_floor(scope, position, positioned)
            else:
                member.outgoing.push(positioned)

    # -- presence ------------------------------------------------------------------------------

    def local_presence(self, scope: Scope) -> list[list[Any]]:
        """``[connection id, presence info]`` of each local member of ``scope``, right now."""
        members = self.members.get(scope)
        if not members:
            return []
        return [[connection_id, member.info] for connection_id, member in members.items()]

    def _answer_presence(self, request: dict[str, Any]) -> None:
        # The answer is taken now, in the reader; only sending it waits (in a task of its own,
        # so that frames keep flowing to clients meanwhile).
        answer = {"members": self.local_presence((request["namespace"], request["room"]))}
        task = asyncio.ensure_future(self._send_answer(request, answer))
        self._answers.add(task)
        task.add_done_callback(self._answer_sent)

    async def _send_answer(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        try:
            await self.layer.reply(request, answer)
        except MessageTooLarge as exc:
            await self.layer.reply_error(
                request, f"this process's presence answer is too large for the broker ({exc})"
            )
        except (TypeError, ValueError) as exc:  # presence_info changed in place into a non-dict
            await self.layer.reply_error(request, f"a presence_info cannot be sent: {exc}")

    def _answer_sent(self, task: asyncio.Task[None]) -> None:
        self._answers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            counters["undeliverable"] += 1
            _failed(
                "presence_answer",
                "the namespaces hub could not send %d presence answer(s): %r",
                task.exception(),
            )

    async def _renew_memberships(self) -> None:
        interval = float(getattr(self.layer, "group_expiry", 86400)) / 2
        while True:
            await asyncio.sleep(interval)
            for group, channel in list(self._joined.values()):
                await self.layer.group_add(group, channel)
