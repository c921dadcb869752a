"""Reaching neffos clients from anywhere — consumers, Django views, signals, Celery tasks.

Everything goes through the channel layer, so it works across server instances:

* :func:`broadcast` — an event to every connection in a namespace, or in a room of it,
  optionally excluding one connection (the exclusion holds on every instance);
* :func:`send_to` — an event to one connection, by its id (neffos' ``To``);
* :func:`ask` — ask one connection's client and await its answer;
* :func:`presence` — who is in a namespace, or in a room of it (see :mod:`.presence`).

Each has a ``*_sync`` twin for synchronous code (views, signals, Celery). A frame is serialized
once, by the sender. A broadcast reaches each server process once, and that process's
:mod:`hub <.hub>` writes it to the local clients connected to the namespace (and joined to the
room, for room events), as neffos does; ``exclude`` travels in the message and is honoured by
every hub.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .groups import namespace_group, room_group
from .namespace import DEFAULT_ASK_TIMEOUT
from .presence import query as presence_query
from .protocol import Message, serialize

FRAME_TYPE = "neffos.frame"
ASK_TYPE = "neffos.ask"


def _layer(layer: Any) -> Any:
    found = layer if layer is not None else get_channel_layer()
    if found is None:
        raise RuntimeError("no channel layer is configured (settings.CHANNEL_LAYERS)")
    return found


def frame_message(message: Message, exclude: str | None = None) -> dict[str, Any]:
    """The channel-layer message that carries ``message`` to consumers."""
    return {
        "type": FRAME_TYPE,
        "namespace": message.namespace,
        "room": message.room,
        "frame": serialize(message),
        "exclude": exclude,
    }


async def broadcast(
    namespace: str,
    event: str,
    body: str | bytes = "",
    *,
    room: str = "",
    exclude: str | None = None,
    layer: Any = None,
) -> None:
    """Send ``event`` to every connection in ``namespace`` (or its ``room``) on every instance,
    except the connection ``exclude``."""
    message = Message(namespace, room, event, body)
    await send_frame_to_group(_layer(layer), message, exclude)


async def send_frame_to_group(layer: Any, message: Message, exclude: str | None) -> None:
    group = (
        room_group(message.namespace, message.room)
        if message.room
        else (namespace_group(message.namespace))
    )
    # The group's members are the processes' hubs; each hub skips ``exclude`` itself.
    await layer.group_send(group, frame_message(message, exclude))


async def send_to(
    connection_id: str,
    namespace: str,
    event: str,
    body: str | bytes = "",
    *,
    room: str = "",
    layer: Any = None,
) -> None:
    """Send ``event`` to the one connection ``connection_id``, wherever it is connected."""
    await _layer(layer).send(connection_id, frame_message(Message(namespace, room, event, body)))


async def ask(
    connection_id: str,
    namespace: str,
    event: str,
    body: str | bytes = "",
    *,
    room: str = "",
    timeout: float = DEFAULT_ASK_TIMEOUT,
    layer: Any = None,
) -> str | bytes:
    """Ask the client of ``connection_id`` and return its answer.

    The client answers by returning ``neffos.reply(value)`` from its handler. Raises
    ``AskError`` if it answers with an error (or is not connected to ``namespace``),
    ``AskTimeout`` if no answer comes within ``timeout``, ``NoResponders`` if the connection
    is gone.
    """
    request = {
        "type": ASK_TYPE,
        "namespace": namespace,
        "room": room,
        "event": event,
        "body": body,
        "timeout": timeout,
    }
    reply = await _layer(layer).ask(connection_id, request, timeout=timeout)
    return reply["body"]  # type: ignore[no-any-return]


async def presence(
    namespace: str, room: str = "", *, by: str | None = None, layer: Any = None
) -> list[dict[str, Any]]:
    """The connections in ``namespace`` (``room=""``) or in its ``room``, on every instance.

    ``[{"id": connection_id, "info": presence_info}, ...]`` sorted by id; ``by="user"`` gives one
    ``{"key": user, "ids": [...], "info": ...}`` per distinct ``info["user"]``. Exact as soon as
    joins and leaves have returned (see :mod:`.presence`); ``PresenceUnavailable`` if the broker
    keeps no registry of processes.
    """
    return await presence_query(_layer(layer), namespace, room, by)


broadcast_sync = async_to_sync(broadcast)
send_to_sync = async_to_sync(send_to)
ask_sync = async_to_sync(ask)
presence_sync = async_to_sync(presence)
