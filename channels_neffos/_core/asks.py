"""How an ask looks to its receiver: a normal message with its reply address under one key.

``layer.ask(channel, message)`` sends ``message`` with ``[reply_to, asker_pid]`` under the
reserved key ``"__neffos_ask__"`` (:data:`ASK_KEY`); the receiver's handler, routed by the
message's ``type`` as usual, answers with ``layer.reply(request, response)`` or
``reply_error``, which publishes a ``REPLY`` envelope to the asker's reply inbox. ``group_ask``
asks every member of a group and takes the first answer.

What the asker learns: the reply; ``AskError`` (the receiver answered with an error);
``NoResponders`` at once when nothing holds the target — the broker reached no subscriber, the
owning process says the channel is gone, or (``group_ask``) no process has members; otherwise
``AskTimeout``. An answer after the timeout, or a second answer, is counted as
``layer.counters["late_replies"]`` and dropped. See ``docs/ask.rst``.

The routing of asks is the router's (:mod:`.router`); this module is only the message format.
"""

from __future__ import annotations

from typing import Any

from .. import envelope

#: The key of a message that carries an ask's reply address.
ASK_KEY = "__neffos_ask__"


def ask_body(message: dict[str, Any], reply_to: str, asker_pid: str) -> bytes:
    """``message`` with its reply address, encoded (``TypeError`` if it cannot be)."""
    return envelope.pack_body({**message, ASK_KEY: [reply_to, asker_pid]})


def ask_info(request: Any) -> tuple[str, str]:
    """``(reply_to, asker_pid)`` of a received ask; ``ValueError`` if it is not an ask."""
    info = request.get(ASK_KEY) if isinstance(request, dict) else None
    if (
        not isinstance(info, (list, tuple))
        or len(info) != 2
        or not all(isinstance(part, str) for part in info)
    ):
        raise ValueError(
            "this message is not an ask (it has no reply address); pass the message exactly "
            "as your handler received it"
        )
    return info[0], info[1]


def is_ask(message: Any) -> bool:
    """Whether a received message is an ask (carries a reply address)."""
    return isinstance(message, dict) and ASK_KEY in message
