"""neffos-style namespaces, rooms and events for Django Channels, for the ``neffos.js`` client.

* :class:`Namespace`, :func:`event`, :class:`Reject` — declare what clients may connect to and do;
  ``NATIVE_MESSAGE`` is the event of plain WebSocket frames (neffos' native messages);
* :class:`NeffosConsumer` — the WebSocket consumer speaking the neffos protocol;
* :mod:`.server` — broadcast, send to one connection, ask a client, or list who is connected
  (:mod:`.presence`), from anywhere;
* :mod:`.membership` — joining and leaving namespaces and rooms; :mod:`.presence` — who is
  connected, on every instance (``presence``, ``NeffosConsumer.presence_info``, presence events);
* :mod:`.protocol` — the wire format; :mod:`.groups` — how namespaces and rooms map to groups;
* :mod:`.hub` — each process receives a broadcast once and writes it to its local clients;
  :mod:`.outgoing` — each client's bounded write buffer (slow clients are closed with
  :data:`CLOSE_SLOW_CLIENT`, counted in :data:`counters`).
"""

from .consumer import NeffosConsumer
from .namespace import NATIVE_MESSAGE, Namespace, Reject, event
from .outgoing import CLOSE_SLOW_CLIENT, counters
from .presence import PRESENCE_JOIN, PRESENCE_LEAVE
from .protocol import Message, ProtocolError
from .recovery import history_rooms
from .server import (
    ask,
    ask_sync,
    broadcast,
    broadcast_sync,
    presence,
    presence_sync,
    send_to,
    send_to_sync,
)

__all__ = [
    "CLOSE_SLOW_CLIENT",
    "NATIVE_MESSAGE",
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "Message",
    "Namespace",
    "NeffosConsumer",
    "ProtocolError",
    "Reject",
    "ask",
    "ask_sync",
    "broadcast",
    "broadcast_sync",
    "counters",
    "event",
    "history_rooms",
    "presence",
    "presence_sync",
    "send_to",
    "send_to_sync",
]
