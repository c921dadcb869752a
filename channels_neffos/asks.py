"""Asks: a message that expects one answer, across processes (the ``ask`` extension).

``layer.ask(channel, message)`` sends ``message`` with a reply address under the reserved key
``"__neffos_ask__"`` (``[reply_to, asker_pid]``); the receiver's handler answers with
``layer.reply(request, response)`` or ``reply_error``, which publishes a ``REPLY`` envelope to
the asker's reply inbox (:mod:`channels_neffos.replies` waits for it). ``group_ask`` asks every
member of a group and takes the first answer.

What the asker learns: the reply; ``AskError`` (the receiver answered with an error);
``NoResponders`` at once when nothing holds the target — the broker reached no subscriber, the
owning process says the channel is gone, or (``group_ask``) no process has members; otherwise
``AskTimeout``. An answer after the timeout, or a second answer, is counted as
``layer.counters["late_replies"]`` and dropped. See ``docs/ask.rst``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import envelope
from .exceptions import NoResponders

if TYPE_CHECKING:
    from .process import LayerProcess

#: The key of a message that carries an ask's reply address.
ASK_KEY = "__neffos_ask__"


def ask_body(process: LayerProcess, message: dict[str, Any], reply_to: str) -> bytes:
    """``message`` with its reply address, encoded; ``MessageTooLarge`` if it cannot fit."""
    body = envelope.pack_body({**message, ASK_KEY: [reply_to, process.pid]})
    process.check_size(body)
    return body


async def ask_channel(
    process: LayerProcess, channel: str, owner: str | None, message: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Ask ``channel`` (owned by the process ``owner``; ``None``: a worker channel)."""

    async def send(reply_to: str) -> None:
        body = ask_body(process, message, reply_to)
        if owner is None:
            await process.send_to_worker_channel(channel, body, reply_to)
        elif owner == process.pid:
            if channel not in process.mailboxes:
                raise NoResponders(channel)
            process.deliver(channel, body, raise_full=True)
        else:
            request = envelope.Envelope(envelope.CHANNEL, process.pid, channel, body, reply_to)
            subject = process.channel_subject(owner, channel)
            if await process.replies.publish_request(subject, request) == 0:
                raise NoResponders(channel)

    answer: dict[str, Any] = await process.replies.request(channel, timeout, send)
    return answer


async def ask_group(
    process: LayerProcess, group: str, message: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Ask every member of ``group``, here and elsewhere; the first answer wins."""

    async def send(reply_to: str) -> None:
        body = ask_body(process, message, reply_to)
        local_members = process.deliver_to_group(group, body)
        request = envelope.Envelope(envelope.GROUP, process.pid, group, body, reply_to)
        receivers = await process.replies.publish_request(process.group_subject(group), request)
        if receivers == 0 and local_members == 0:
            raise NoResponders(group)

    answer: dict[str, Any] = await process.replies.request(group, timeout, send)
    return answer


async def send_reply(process: LayerProcess, request: dict[str, Any], kind: str, value: Any) -> None:
    """Answer the ask ``request`` (as received) with a reply of ``kind``."""
    reply_to, asker_pid = ask_info(request)
    body = envelope.pack_reply(kind, value)
    process.check_size(body)
    await process.replies.send_reply(reply_to, asker_pid, body)


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
