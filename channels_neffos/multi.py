"""Several channels_neffos layers at once: a bridge for moving an application between brokers.

Configuration::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_neffos.MultiChannelLayer",
        "CONFIG": {"layers": [
            {"BACKEND": "channels_neffos.RedisChannelLayer", "CONFIG": {"hosts": [...]}},
            {"BACKEND": "channels_neffos.NatsChannelLayer", "CONFIG": {"servers": [...]}},
        ]},
    }}

Semantics:

* **Publishes go to every child** (``send`` to process channels, ``group_send``, ``group_add``,
  ``group_discard``, ``flush``), so instances still on one broker keep receiving during a
  rolling migration. A child whose broker is unreachable is skipped (logged); the call fails only
  if every child fails.
* **Worker channels** are sent through the *first* child that works, so that each message is
  still read exactly once. List the old broker first until every instance runs the bridge.
* **Receives merge and de-duplicate.** All children share this process's pid, so one channel name
  (from :meth:`new_channel`) is reachable through every broker. ``receive`` takes whichever child
  delivers first; messages sent through the bridge carry an id (under ``"__neffos_id__"``) and
  the copies that arrive through the other brokers are dropped. Messages from instances that are
  not on the bridge carry no id and arrive once anyway.
* **Asks try each child in order** and fall through on ``NoResponders`` or
  ``BrokerUnavailable``; ``AskTimeout`` and ``AskError`` are answers and do not fall through.
  Replies go out through every child; the asker's broker delivers one, the rest find no listener.

Order is FIFO per sender and channel *per broker*; a message and its copy race, the first wins.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.layers import BaseChannelLayer
from django.utils.module_loading import import_string

from .channel_layer import DEFAULT_ASK_TIMEOUT, NeffosChannelLayer
from .exceptions import BrokerUnavailable, NoResponders

logger = logging.getLogger("channels_neffos")

MESSAGE_ID_KEY = "__neffos_id__"
#: How many message ids each event loop remembers for de-duplication.
_SEEN_IDS = 10_000
_T = TypeVar("_T")


class _LoopState:
    """De-duplication memory and early-arrived messages of one event loop."""

    def __init__(self) -> None:
        self.pid = secrets.token_hex(6)
        #: (channel, message id) pairs already delivered: a group message has one id and many
        #: receiving channels, each of which gets it once.
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.early: dict[str, deque[dict[str, Any]]] = {}

    def first_sighting(self, channel: str, message_id: str) -> bool:
        key = (channel, message_id)
        if key in self.seen:
            return False
        self.seen[key] = None
        if len(self.seen) > _SEEN_IDS:
            self.seen.popitem(last=False)
        return True


class MultiChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """Fan publishes out to several layers and merge what they deliver."""

    extensions = ["groups", "flush", "ask", "exclude", "capacity", "presence"]

    def __init__(self, layers: list[dict[str, Any]] | None = None, **shared: Any) -> None:
        """``layers``: the children's ``BACKEND``/``CONFIG``. Any other option (``prefix``,
        ``capacity``, ``expiry``...) is given to every child, over its own ``CONFIG``."""
        if not isinstance(layers, list) or not layers:
            raise TypeError(
                "MultiChannelLayer needs CONFIG "
                "{'layers': [{'BACKEND': ..., 'CONFIG': {...}}, ...]}"
            )
        self.children: list[NeffosChannelLayer] = []
        for index, entry in enumerate(layers):
            if not isinstance(entry, dict) or "BACKEND" not in entry:
                raise TypeError(f"layers[{index}] must be a dict with a 'BACKEND' key")
            unknown = set(entry) - {"BACKEND", "CONFIG"}
            if unknown:
                raise TypeError(f"layers[{index}] has unknown keys {sorted(unknown)}")
            child = import_string(entry["BACKEND"])(**{**entry.get("CONFIG", {}), **shared})
            if not isinstance(child, NeffosChannelLayer):
                raise TypeError(
                    f"layers[{index}] is {entry['BACKEND']}; MultiChannelLayer bridges "
                    f"channels_neffos layers only (they can share one channel name)"
                )
            child.pid_source = self._loop_pid
            self.children.append(child)
        first = self.children[0]
        super().__init__(expiry=first.expiry, capacity=first.capacity)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def counters(self) -> dict[str, int]:
        """The children's counters, summed."""
        total: dict[str, int] = {}
        for child in self.children:
            for reason, count in child.counters.items():
                total[reason] = total.get(reason, 0) + count
        return total

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    def _loop_pid(self) -> str:
        return self._state().pid

    # -- fan-out helpers -----------------------------------------------------------------------

    async def _on_every_child(
        self, operation: str, call: Callable[[NeffosChannelLayer], Awaitable[_T]]
    ) -> list[_T]:
        results: list[_T] = []
        failures: list[BrokerUnavailable] = []
        for child in self.children:
            try:
                results.append(await call(child))
            except BrokerUnavailable as exc:
                logger.warning("%s skipped one broker: %s", operation, exc)
                failures.append(exc)
        if not results:
            raise failures[0]
        return results

    async def _on_first_working_child(
        self, call: Callable[[NeffosChannelLayer], Awaitable[_T]]
    ) -> _T:
        failures: list[Exception] = []
        for child in self.children:
            try:
                return await call(child)
            except (BrokerUnavailable, NoResponders) as exc:
                failures.append(exc)
        raise failures[-1]

    def _with_id(self, message: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")
        if MESSAGE_ID_KEY in message:
            raise ValueError(f"message must not contain the reserved key {MESSAGE_ID_KEY!r}")
        return {**message, MESSAGE_ID_KEY: secrets.token_hex(8)}

    # -- channel layer API ---------------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.children[0].require_valid_channel_name(channel)
        tagged = self._with_id(message)
        if "!" not in channel:
            await self._on_first_working_child(lambda child: child.send(channel, tagged))
        else:
            await self._on_every_child("send", lambda child: child.send(channel, tagged))

    async def group_send(
        self, group: str, message: dict[str, Any], *, exclude: str | None = None
    ) -> None:
        tagged = self._with_id(message)
        await self._on_every_child(
            "group_send", lambda child: child.group_send(group, tagged, exclude=exclude)
        )

    async def group_add(self, group: str, channel: str) -> None:
        await self._on_every_child("group_add", lambda child: child.group_add(group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        await self._on_every_child(
            "group_discard", lambda child: child.group_discard(group, channel)
        )

    async def group_members(self, group: str) -> list[str]:
        """Every child's members, together: during a move, some processes may be reachable on
        one broker only."""
        answers = await asyncio.gather(*(child.group_members(group) for child in self.children))
        return sorted({channel for answer in answers for channel in answer})

    async def group_size(self, group: str) -> int:
        """``len(group_members(group))``: a process on both brokers answers on both."""
        return len(await self.group_members(group))

    async def flush(self) -> None:
        await self._on_every_child("flush", lambda child: child.flush())

    async def close(self) -> None:
        for child in self.children:
            await child.close()

    async def new_channel(self, prefix: str = "specific", *, capacity: int | None = None) -> str:
        channel = await self._on_first_working_child(
            lambda child: child.new_channel(prefix, capacity=capacity)
        )
        await self._on_every_child(
            "new_channel", lambda child: child.open_channel(channel, capacity=capacity)
        )
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        state = self._state()
        while True:
            arrived = state.early.get(channel)
            if not arrived:
                await self._receive_from_any(channel, state)
                arrived = state.early[channel]
            message = arrived.popleft()
            if not arrived:
                del state.early[channel]
            message_id = message.pop(MESSAGE_ID_KEY, None)
            if message_id is None or state.first_sighting(channel, message_id):
                return message

    async def _receive_from_any(self, channel: str, state: _LoopState) -> None:
        """Wait until at least one child delivers; keep everything delivered in ``state.early``.

        Cancellation-safe: whatever a child delivered before the cancellation is kept too.
        """
        tasks = [asyncio.ensure_future(child.receive(channel)) for child in self.children]
        waiting = set(tasks)
        try:
            # A child whose broker is down fails at once: keep waiting on the others.
            while waiting and not any(t.done() and t.exception() is None for t in tasks):
                _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            delivered = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
            if delivered:
                state.early.setdefault(channel, deque()).extend(delivered)
        if not delivered:
            raise tasks[0].exception()  # type: ignore[misc]

    # -- ask extension -------------------------------------------------------------------------

    async def ask(
        self, channel: str, message: dict[str, Any], timeout: float = DEFAULT_ASK_TIMEOUT
    ) -> dict[str, Any]:
        return await self._on_first_working_child(lambda c: c.ask(channel, message, timeout))

    async def group_ask(
        self, group: str, message: dict[str, Any], timeout: float = DEFAULT_ASK_TIMEOUT
    ) -> dict[str, Any]:
        return await self._on_first_working_child(lambda c: c.group_ask(group, message, timeout))

    async def reply(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        await self._on_every_child("reply", lambda child: child.reply(request, response))

    async def reply_error(self, request: dict[str, Any], text: str) -> None:
        await self._on_every_child("reply_error", lambda child: child.reply_error(request, text))

    is_ask = staticmethod(NeffosChannelLayer.is_ask)


__all__ = ["MESSAGE_ID_KEY", "MultiChannelLayer"]
