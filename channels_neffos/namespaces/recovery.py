"""Recovery in history rooms: positions for clients that ask, and the replay when they rejoin.

A room has history when its group (``ns.<namespace>.r.<room>``, see :mod:`.groups`) matches the
layer's ``history`` option (:func:`history_rooms` writes the rule). Its broadcasts then reach
each process in one order per room, each with its position (``{"epoch", "offset"}``, see
``docs/history.rst``). This module carries those positions to the clients that ask for them —
the ``channels-neffos`` client helper (``static/channels_neffos/recovery.js``) — and nothing to
the others: a plain neffos.js client receives exactly the frames it always did.

The wire, within the neffos format (no change to neffos.js):

* **Opting in.** After connecting to a namespace the helper emits :data:`RESUME` with a JSON body
  ``{"rooms": {room: {"epoch": e, "offset": o} | null}, "was": previous connection id}``: the
  last position it has of each room it is about to rejoin (``{"epoch": null, "offset": 0}``
  if the room had no history yet when it joined), and the id its previous connection
  had (messages that connection sent, which it did not receive, are not replayed to it). From
  then on the connection's room broadcasts carry their position in the frame's *wait* field:
  ``~<epoch>.<offset>`` (``!`` appended when history could not give back messages before it).
  neffos.js hands such a token to the event handler untouched (``msg.wait``): only tokens
  starting with ``$`` or ``#`` mean a reply to it.
* **Rejoining.** When such a connection joins a history room the server: starts holding the
  room's live broadcasts for it; joins (the process is in the room's group, so nothing sent from
  now on is missed); answers the join; reads the room's history after the client's position and
  writes it (at most :attr:`~.consumer.NeffosConsumer.max_recovery_messages`); writes
  :data:`REPLAYED` with ``{"epoch", "offset", "recovered", "replayed"}`` (and ``"reason"`` when
  not recovered); then writes the held broadcasts that come after what the replay covered, and
  goes live. So the client gets what it missed in order, before anything live, with no gap and
  no duplicate at the switch (the held frames and the replay overlap; offsets sort it out).
* **Not recovered** (``recovered: false``): the position is of another epoch (the broker lost the
  history: restarted without persistence, flushed), older than what is kept (away too long:
  size or ttl), more than the cap behind, or the history could not be read (``reason``:
  ``"epoch"``, ``"evicted"``, ``"too_many"``, ``"unavailable"``). Nothing is replayed then —
  never part of what was missed presented as all of it; the application reloads its state.
  A first join (no position) gets :data:`REPLAYED` too, with the room's position now.

Only rooms recover; the namespace's own broadcasts carry positions but are not replayed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from .._drops import RateLimitedLog
from ..envelope import POSITION_KEY
from .groups import room_group
from .server import FRAME_TYPE

logger = logging.getLogger("channels_neffos.namespaces")
_unreadable = RateLimitedLog(logger, logging.WARNING)

#: The helper's opt-in, with its last positions (client → server).
RESUME = "_NeffosResume"
#: The end of a room's replay and its outcome (server → client).
REPLAYED = "_NeffosReplayed"
#: The most messages one rejoin replays, unless the consumer says otherwise.
DEFAULT_MAX_RECOVERY = 1000
_TOKEN = "~"

Position = dict[str, Any]
Frame = str | bytes


def history_rooms(
    namespace: str,
    rooms: str = "*",
    *,
    size: int,
    ttl: float,
    meta_ttl: float | None = None,
) -> dict[str, dict[str, float]]:
    """A rule for the layer's ``history`` option: the rooms of ``namespace`` whose names match
    the glob ``rooms`` keep ``size`` messages for ``ttl`` seconds::

        "CONFIG": {"history": history_rooms("chat", size=1000, ttl=600)}

    A glob matches room names of letters, digits, ``-`` and ``_`` (the readable group names,
    see :mod:`.groups`); list rooms with other names one by one (``rooms`` without ``*``, ``?``
    or ``[``), which names their hashed groups exactly."""
    limits: dict[str, float] = {"size": size, "ttl": ttl}
    if meta_ttl is not None:
        limits["meta_ttl"] = meta_ttl
    if not any(character in rooms for character in "*?["):
        return {room_group(namespace, rooms): limits}
    probe = room_group(namespace, "x")
    if probe.startswith("nsh."):
        raise ValueError(
            f"namespace {namespace!r} has characters other than letters, digits, - and _: its "
            f"rooms' groups are hashed, so list the rooms by name instead of a glob"
        )
    return {f"{probe[:-1]}{rooms}": limits}


def tagged(frame: Frame, position: Position) -> Frame:
    """``frame`` (a broadcast: its wait field is empty) with ``position`` in its wait field."""
    token = f"{_TOKEN}{position['epoch']}.{position['offset']}{'!' if position.get('gap') else ''}"
    return token + frame if isinstance(frame, str) else token.encode() + frame


def is_taggable(frame: Frame) -> bool:
    """A neffos frame with an empty wait field (a native frame has no header to carry it)."""
    return frame[:1] in (";", b";")


@dataclass
class Resume:
    """What a helper said when it opted in."""

    #: room -> the last position the client has (``None``: none yet)
    rooms: dict[str, Position | None]
    #: the client's previous connection id, if it had one
    was: str | None


def parse_resume(body: str | bytes) -> Resume:
    """The body of a :data:`RESUME`; ``ValueError`` with what is wrong."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"{RESUME} takes a JSON object: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rooms", {}), dict):
        raise ValueError(f'{RESUME} takes {{"rooms": {{room: position}}, "was": id}}')
    rooms: dict[str, Position | None] = {}
    for room, position in data.get("rooms", {}).items():
        if position is not None and not (
            isinstance(position, dict)
            and type(position.get("offset")) is int
            and position["offset"] >= 0
            and (
                isinstance(position.get("epoch"), str)
                or (position.get("epoch") is None and position["offset"] == 0)
            )
        ):
            raise ValueError(f"{RESUME}: room {room!r} has no valid position: {position!r}")
        rooms[room] = position and {"epoch": position["epoch"], "offset": position["offset"]}
    was = data.get("was")
    return Resume(rooms, was if isinstance(was, str) and was else None)


@dataclass
class Replay:
    """What one rejoin's replay did; its :meth:`body` is the :data:`REPLAYED` frame's."""

    epoch: str | None
    #: The last offset the replay covers: held live frames up to it are dropped.
    offset: int
    recovered: bool
    replayed: int = 0
    reason: str | None = None

    def body(self) -> str:
        data: dict[str, Any] = {
            "epoch": self.epoch,
            "offset": self.offset,
            "recovered": self.recovered,
            "replayed": self.replayed,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        return json.dumps(data, separators=(",", ":"))


async def replay(
    layer: Any,
    namespace: str,
    room: str,
    since: Position | None,
    cap: int,
    skip: frozenset[str],
    frames: list[Frame],
) -> Replay:
    """Read ``room``'s history after ``since`` and append the frames to write to ``frames``.

    Messages whose ``exclude`` is in ``skip`` (the client's own, sent from this or its previous
    connection) are left out. All or nothing: if the client missed more than ``cap`` messages or
    history cannot give back every one, nothing is appended and ``recovered`` is ``False``."""
    group = room_group(namespace, room)
    try:
        if since is None or since["epoch"] is None:
            now = await layer.group_history(group, limit=1)
            if since is None or now.epoch is None:
                return Replay(now.epoch, now.offset, recovered=True)
            # The room had no history when the client joined it and it has received nothing
            # since: everything of the epoch made after that is what it missed.
            since = {"epoch": now.epoch, "offset": 0}
        found = await layer.group_history(group, since=since, limit=cap)
    except Exception as exc:  # the broker is down, or the group lost its rule: live goes on
        _unreadable(
            "history",
            "%d recovery read(s) failed; the clients were told recovered: false (latest: %r)",
            exc,
        )
        return Replay(None, 0, recovered=False, reason="unavailable")
    if not found.recovered:
        reason = "epoch" if found.epoch != since["epoch"] else "evicted"
        return Replay(found.epoch, found.offset, recovered=False, reason=reason)
    last = found.messages[-1][POSITION_KEY]["offset"] if found.messages else since["offset"]
    if last < found.offset:
        return Replay(found.epoch, found.offset, recovered=False, reason="too_many")
    count = 0
    for message in found.messages:
        if message.get("type") != FRAME_TYPE or message.get("exclude") in skip:
            continue
        frame = message["frame"]
        if is_taggable(frame):
            frames.append(tagged(frame, message[POSITION_KEY]))
            count += 1
    return Replay(found.epoch, last, recovered=True, replayed=count)
