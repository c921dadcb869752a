"""The broker name scheme: every subject the layers use, in one place (the wire contract).

``P`` is the layer's ``prefix``, ``pid`` a process's 12 hex digits. The parts below are joined
by the transport's spelling (``:`` on Redis, ``.`` on NATS, escaped where NATS needs it); each
subject is handed to the transport as a :class:`~channels_neffos.transports.base.Subject` that
also says which key chooses its server (its *shard*) and whether it addresses one process, so
no transport parses a name.

==========================  ============================  ===========  ===========================
subject                     parts                         shard        what it carries
==========================  ============================  ===========  ===========================
process wildcard            ``P <pid> *``                 ``pid``      the one subscription of a
                                                                       process: all below
process channel             ``P <pid> c <channel>``       ``pid``      messages to a channel it
                                                                       owns (and asks to it)
reply inbox                 ``P <pid> r``                 ``pid``      answers to its requests
reply address               ``P <pid> r <token>``         ``pid``      one request's address
                                                                       (named in envelopes)
presence questions          ``P <pid> p``                 ``pid``      "who of a group is here"
group                       ``P g <group>``               ``group``    a group's messages
history group               ``P h <group>``               ``group``    its positioned batches
                                                                       (and on Redis its stream)
worker channel              ``P q <channel>``             ``channel``  a queue: one reader each
==========================  ============================  ===========  ===========================

A transport that cannot subscribe to patterns (``Transport.pattern_subscriptions`` is false:
Redis Cluster's sharded pub/sub) gets one exact subject per process instead of the wildcard,
``P <pid>``, and every process subject above — channel, reply inbox, presence questions — is
that one subject: the envelope says what a message is for. Reply addresses keep their spelling
(``P <pid> r <token>``, in envelopes only). Such a transport may also spell names its own way
on the wire (Redis Cluster adds a hash tag from the shard key): all processes of a prefix must
use the same transport kind.

Outside this scheme, each transport names its registry of processes (presence) as its broker
stores it: a sorted set ``P:p:processes`` on Redis, a key-value bucket ``P_processes`` on NATS.

The kinds (``c``, ``r``, ``p``, ``g``, ``h``, ``q``) never collide with a pid (12 hex digits), so
the mapping is injective; ``docs/wire.rst`` documents it for other languages.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from ..transports.base import Subject

CHANNEL = "c"
REPLY = "r"
PRESENCE = "p"
GROUP = "g"
HISTORY = "h"
QUEUE = "q"

Spell = Callable[..., str]


class Names:
    """The subjects of one prefix, spelled by one transport."""

    __slots__ = ("_patterns", "_prefix", "_spell", "_spell_wildcard")

    def __init__(
        self, prefix: str, spell: Spell, spell_wildcard: Spell, *, patterns: bool = True
    ) -> None:
        self._prefix = prefix
        self._spell = spell
        self._spell_wildcard = spell_wildcard
        self._patterns = patterns

    def process(self, pid: str) -> Subject:
        """What a process subscribes: the wildcard of every subject of the process below, or,
        without pattern subscriptions, its one exact subject."""
        if not self._patterns:
            return Subject(self._spell(self._prefix, pid), pid, True)
        return Subject(self._spell_wildcard(self._prefix, pid), pid, True, True)

    def channel(self, pid: str, channel: str) -> Subject:
        if not self._patterns:
            return self.process(pid)
        return Subject(self._spell(self._prefix, pid, CHANNEL, channel), pid, True)

    def reply_inbox(self, pid: str) -> Subject:
        if not self._patterns:
            return self.process(pid)
        return Subject(self._spell(self._prefix, pid, REPLY), pid, True)

    def new_reply_address(self, pid: str) -> str:
        """A fresh reply address of ``pid``'s process (under its reply inbox)."""
        return self._spell(self._prefix, pid, REPLY, secrets.token_hex(8))

    def reply_target(self, reply_to: str, asker_pid: str, inbox: Subject) -> Subject:
        """Where to publish an answer to ``reply_to``: the asker's reply inbox when the address
        is under it — so answers to one process share frames; the envelope names the address —
        else the address itself (a peer that chose its own)."""
        if not self._patterns or reply_to.startswith(inbox.name):
            return inbox
        return Subject(reply_to, asker_pid, True)

    def presence(self, pid: str) -> Subject:
        if not self._patterns:
            return self.process(pid)
        return Subject(self._spell(self._prefix, pid, PRESENCE), pid, True)

    def group(self, group: str) -> Subject:
        return Subject(self._spell(self._prefix, GROUP, group), group)

    def history(self, group: str) -> Subject:
        """A history group's subject: positioned batches (see :mod:`.history`)."""
        return Subject(self._spell(self._prefix, HISTORY, group), group, history=True)

    def queue(self, channel: str) -> Subject:
        return Subject(self._spell(self._prefix, QUEUE, channel), channel)

    def queues(self) -> Subject:
        """Every worker channel's queue (a wildcard: for ``flush``)."""
        return Subject(self._spell_wildcard(self._prefix, QUEUE), QUEUE, pattern=True)
