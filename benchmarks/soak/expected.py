"""Who should have received each broadcast, and whom each ``who`` answer should have named.

The oracle of the soak's "lost message" count, from what the clients logged (:mod:`.logs`):
every join and leave with its request and acknowledgement time, every send, every receipt,
every WebSocket close. Times are seconds since the start of the run, on the machine's one clock.

**Who should receive a broadcast** (:func:`should_receive`). A room's member on either instance,
other than its sender, whose join was acknowledged at least ``GUARD_S`` before the send and who
did not ask to leave (nor lose its WebSocket) until ``GUARD_S`` after it *and* after the message
reached the other members on its instance: that instance's hub writes a broadcast to all its
members at once, so a client still there then got it too, while in a latency spike a message may
take longer than ``GUARD_S`` to come. A join or leave racing a broadcast may or may not see it,
so those are not counted either way (:func:`may_receive`: *tolerated*); a delivery to a client
that was not even asking to join yet, or had already left, or to the sender, is *unexpected*. A
join or leave that failed leaves the membership unknown: such a client is never expected, and
never unexpected.

**A who answer** (:func:`judge_who_answer`) must name everyone whose join was acknowledged before
the ask and who did not ask to leave (nor lose its WebSocket) before the answer, and no one who
was not yet asking to join or had already left: presence is exact once joins and leaves have
returned, so there is no guard time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .logs import INF, ClientLogs, Membership

#: A join must have been acknowledged this long before a send, and a leave requested this long
#: after it, for the client to be expected to receive it.
GUARD_S = 1.0

#: (message id, receiver) → when that client first received that message.
Received = dict[tuple[int, int], float]


class Delivery(NamedTuple):
    """A delivery that should happen: ``message``, sent at ``sent_at``, to ``receiver``."""

    message: int
    receiver: int
    src: int  # the sender's instance
    dst: int  # the receiver's instance
    sent_at: float


def websocket_closes(errors: Iterable[tuple[int, float, str, str]]) -> dict[int, float]:
    """When each client's WebSocket closed: the first "websocket closed" error it logged.

    A client stays in its rooms until then at the latest: it is expected to receive nothing
    later, and a ``who`` answer after that need not name it."""
    closed_at: dict[int, float] = {}
    for client, t, what, _ in errors:
        if what == "websocket closed":
            closed_at.setdefault(client, t)
    return closed_at


@dataclass
class Receipts:
    """The clients' receipts, sorted out by :func:`sort_receipts`."""

    received: Received
    duplicates: int = 0
    unknown: int = 0
    wrong_room: int = 0


def sort_receipts(
    sends: dict[int, tuple[int, str, float]], receipts: Iterable[tuple[int, int, str, float]]
) -> Receipts:
    """Each receipt is, checked in this order: *unknown* (no client logged sending that message
    id), in the *wrong room* (not the room it was sent to), a *duplicate* (that client already
    received that message), or a delivery, kept in ``received`` with its time (the first one)."""
    sorted_out = Receipts({})
    for message, receiver, room, t in receipts:
        sent = sends.get(message)
        if sent is None:
            sorted_out.unknown += 1
        elif sent[1] != room:
            sorted_out.wrong_room += 1
        elif (message, receiver) in sorted_out.received:
            sorted_out.duplicates += 1
        else:
            sorted_out.received[(message, receiver)] = t
    return sorted_out


def hub_arrivals(received: Received, instance_of: dict[int, int]) -> dict[tuple[int, int], float]:
    """When each message last reached a client of each instance: (message, instance) → time.

    An instance's hub writes a broadcast to all its members at once, so by then the message had
    reached every client of that instance still in the room."""
    arrived: dict[tuple[int, int], float] = {}
    for (message, receiver), t in received.items():
        key = (message, instance_of[receiver])
        arrived[key] = max(t, arrived.get(key, t))
    return arrived


def should_receive(
    m: Membership, sender: int, sent_at: float, stayed_until: float, reached_instance: float
) -> bool:
    """Whether the member ``m`` of a room must receive a message ``sender`` sent to it at
    ``sent_at``: ``m`` is not the sender, its join was acknowledged at least ``GUARD_S`` before
    the send, and it stayed (``stayed_until``: its leave request or WebSocket close) until at
    least ``GUARD_S`` after the send and past the moment the message reached its instance's other
    members (``reached_instance``; -inf if it reached none: then the guard alone decides)."""
    return (
        m.client != sender
        and m.join_acked <= sent_at - GUARD_S
        and stayed_until >= sent_at + GUARD_S
        and stayed_until > reached_instance
    )


def expected_deliveries(
    logs: ClientLogs, closed_at: dict[int, float], received: Received
) -> list[Delivery]:
    """Every (message, member) that :func:`should_receive`, in the order of the sends."""
    instance = logs.instance_of
    arrived = hub_arrivals(received, instance)
    expected: list[Delivery] = []
    for message, (sender, room, sent_at) in logs.sends.items():
        for m in logs.memberships.get(room, ()):
            stayed_until = min(m.leave_requested, closed_at.get(m.client, INF))
            reached = arrived.get((message, instance.get(m.client, -1)), -INF)
            if should_receive(m, sender, sent_at, stayed_until, reached):
                expected.append(
                    Delivery(message, m.client, instance[sender], instance[m.client], sent_at)
                )
    return expected


def may_receive(memberships: Iterable[Membership], sent_at: float, received_at: float) -> bool:
    """Whether a client with these ``memberships`` of a room was possibly in it for a message
    sent there at ``sent_at`` and received at ``received_at``: by one of them it had asked to
    join by the time it received the message, and its leave was not acknowledged before the send
    (never, if it failed)."""
    return any(m.join_requested <= received_at and m.leave_acked >= sent_at for m in memberships)


@dataclass
class Unexpected:
    """The deliveries nobody expected, sorted out by :func:`sort_unexpected`."""

    tolerated: int
    unexpected: list[dict[str, Any]]


def sort_unexpected(
    logs: ClientLogs, received: Received, expected: set[tuple[int, int]]
) -> Unexpected:
    """A delivery that is not ``expected`` is *tolerated* if its receiver is not its sender and
    :func:`may_receive` it (a join or leave racing the broadcast), else *unexpected*."""
    by_client_room: dict[tuple[int, str], list[Membership]] = defaultdict(list)
    for room_members in logs.memberships.values():
        for m in room_members:
            by_client_room[(m.client, m.room)].append(m)
    sorted_out = Unexpected(0, [])
    for (message, receiver), t in received.items():
        if (message, receiver) in expected:
            continue
        sender, room, sent_at = logs.sends[message]
        if receiver != sender and may_receive(by_client_room[(receiver, room)], sent_at, t):
            sorted_out.tolerated += 1
        else:
            sorted_out.unexpected.append(
                {"message": message, "receiver": receiver, "room": room, "sent": sent_at, "at": t}
            )
    return sorted_out


def judge_who_answer(
    members: Iterable[Membership],
    closed_at: dict[int, float],
    asked: float,
    answered: float,
    named: set[int],
) -> tuple[list[int], list[int]]:
    """The clients one ``who`` answer, asked at ``asked`` about a room with these ``members``,
    answered at ``answered`` and naming ``named``, left out (*missing*) and named wrongly
    (*extra*). It must name every member whose join was acknowledged by the ask and which neither
    asked to leave nor lost its WebSocket before the answer; it may name only those that had
    asked to join by the answer and whose leave was not acknowledged before the ask."""
    members = list(members)
    must = {
        m.client
        for m in members
        if m.join_acked <= asked
        and m.leave_requested >= answered
        and closed_at.get(m.client, INF) >= answered
    }
    may = {m.client for m in members if m.join_requested <= answered and m.leave_acked >= asked}
    return sorted(must - named), sorted(named - may)


def judge_who_answers(
    logs: ClientLogs, closed_at: dict[int, float]
) -> list[tuple[list[int], list[int]]]:
    """(missing, extra) of each answered ``who`` in ``logs.who``, in its order."""
    return [
        judge_who_answer(logs.memberships.get(room, []), closed_at, asked, answered, named)
        for _, asked, answered, room, named in logs.who
    ]
