"""Who is connected to a namespace, or joined to a room of it, on every instance.

Semantics:

* **Entries.** :func:`query` returns one ``{"id": connection_id, "info": {...}}`` per connection,
  sorted by id; ``info`` is the connection's ``NeffosConsumer.presence_info`` (a JSON-able dict the
  application sets, ``{}`` by default) as it is when the query is answered. ``by="user"`` groups
  the entries whose ``info["user"]`` is equal into one ``{"key": user, "ids": [...], "info":
  {...}}`` (several tabs of one user count once; ``info`` is that of the first id); an entry
  without that key is a group of its own, with ``"key": None``. Groups are sorted by their first
  id.
* **Exact, with no time window.** Once a join or leave has returned (and once the consumer's
  disconnect handling has begun: a closing connection is withdrawn before anything else), every
  query from any process sees it. The scope's Channels group (:mod:`.groups`) holds one
  :mod:`hub <.hub>` per process with members; ``layer.group_members`` lists those hubs exactly
  (see :mod:`channels_neffos._core.roster`), and each hub is asked concurrently for its local
  members, which it answers from its own bookkeeping at the moment the ask arrives.
* **Gone processes.** A hub whose process is gone raises ``NoResponders``: it has no members. A
  hub that does not answer within :data:`ANSWER_TIMEOUT` is looked up again: if it has left the
  group meanwhile (its last member left) it had none; if not, it is left out, counted in
  ``namespaces.counters["presence_timeout"]`` and logged.
* **Cost.** One layer presence query, then one ask per process with members in the scope. Each
  hub's answer is one message; a process with tens of thousands of members in one scope may
  exceed the broker's message size, in which case the query raises ``AskError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .._drops import RateLimitedLog
from ..exceptions import AskTimeout, NoResponders
from .groups import namespace_group, room_group
from .outgoing import counters

logger = logging.getLogger("channels_neffos.namespaces")
_silent_hub = RateLimitedLog(logger, logging.WARNING)

#: The type of the ask each process's hub answers with its local members of a scope.
PRESENCE_TYPE = "neffos.presence"
#: Seconds a query waits for one hub's answer before looking it up again (as the layer's own
#: presence waits for a process).
ANSWER_TIMEOUT = 2.0
#: Events sent to a room's other members when a connection joins or leaves it, if the namespace
#: sets ``presence_events = True``; the body is JSON ``{"id": connection_id, "info": {...}}``.
PRESENCE_JOIN = "_OnPresenceJoin"
PRESENCE_LEAVE = "_OnPresenceLeave"

#: One connection: ``{"id": connection_id, "info": presence_info}``.
Entry = dict[str, Any]


def scope_group(namespace: str, room: str) -> str:
    """The Channels group of a namespace (``room == ""``) or of one of its rooms."""
    return room_group(namespace, room) if room else namespace_group(namespace)


def check_info(info: Any) -> dict[str, Any]:
    """``info`` if it can be a connection's presence info; ``TypeError`` otherwise."""
    if not isinstance(info, dict):
        raise TypeError(f"presence_info must be a dict, not {type(info).__name__}")
    if not all(isinstance(key, str) for key in info):
        raise TypeError("presence_info keys must be str")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"presence_info must be JSON-able ({exc})") from None
    return info


def event_body(connection_id: str, info: dict[str, Any]) -> str:
    """The body of a presence join or leave event."""
    return json.dumps({"id": connection_id, "info": info}, separators=(",", ":"))


async def query(layer: Any, namespace: str, room: str = "", by: str | None = None) -> list[Entry]:
    """The connections in ``namespace`` (``room == ""``) or in its ``room``, on every instance.

    See the module docstring for the entries, ``by`` and the guarantees."""
    if not isinstance(namespace, str) or not isinstance(room, str):
        raise TypeError("namespace and room must be str")
    if by is not None and not isinstance(by, str):
        raise TypeError(f"by must be a str key of presence_info, not {type(by).__name__}")
    group = scope_group(namespace, room)
    hubs = await layer.group_members(group)
    request = {"type": PRESENCE_TYPE, "namespace": namespace, "room": room}
    answers = await asyncio.gather(*(_ask_hub(layer, hub, group, request) for hub in hubs))
    entries = sorted(
        ({"id": member[0], "info": member[1]} for answer in answers for member in answer),
        key=lambda entry: str(entry["id"]),
    )
    return entries if by is None else group_by(entries, by)


async def _ask_hub(layer: Any, hub: str, group: str, request: dict[str, Any]) -> list[Any]:
    try:
        reply = await layer.ask(hub, request, timeout=ANSWER_TIMEOUT)
    except NoResponders:
        return []  # the hub's process, or the hub's channel, is gone: no members there
    except AskTimeout:
        if hub not in await layer.group_members(group):
            return []  # its last member left and the hub stopped between the two steps
        counters["presence_timeout"] += 1
        _silent_hub(
            "timeout",
            "presence: %d hub answer(s) missing; %s did not answer within %s s and is left out",
            hub,
            ANSWER_TIMEOUT,
        )
        return []
    members: list[Any] = reply["members"]
    return members


def group_by(entries: list[Entry], key: str) -> list[Entry]:
    """Entries with equal ``info[key]`` as one ``{"key", "ids", "info"}``; see the module doc."""
    groups: dict[str, Entry] = {}
    for entry in entries:  # sorted by id: each group's ids come out sorted, its first id first
        info = entry["info"]
        if key in info:
            value = info[key]
            index = "v" + json.dumps(value, sort_keys=True)
        else:
            value = None
            index = "c" + str(entry["id"])
        found = groups.get(index)
        if found is None:
            groups[index] = {"key": value, "ids": [entry["id"]], "info": info}
        else:
            found["ids"].append(entry["id"])
    return sorted(groups.values(), key=lambda group: str(group["ids"][0]))
