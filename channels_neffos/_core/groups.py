"""Group membership in one process: which of its channels are in which group, and the broker
subscription each group needs while it has members here.

Semantics:

* **Local state only.** Nothing about groups is stored in the broker: a group is the members
  each process holds, plus one subscription per process to the group's subject while it holds
  any. A membership lasts ``group_expiry`` seconds unless added again.
* **add returns once the subscription is confirmed**, so a ``group_send`` from any process after
  ``add`` returns reaches the channel. Concurrent adds to one group share one subscription
  (:class:`~channels_neffos._aio.SharedAttempt`); one that fails lets the next add try again.
  The membership itself is recorded first, so local deliveries reach it whatever the broker says.
* **discard stops delivery at once**; the group's subscription, if nothing is left, goes in the
  background (a subscription still being made is awaited first).
* **Expired memberships** are pruned when a message for the group arrives and when asked who
  is a member; they receive nothing after their deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from time import monotonic

from .._aio import SharedAttempt


class LocalGroups:
    """This process's memberships, and its group subscriptions."""

    __slots__ = (
        "_group_expiry",
        "_next_expiry",
        "_spawn",
        "_subscribe",
        "_subscriptions",
        "_unsubscribe",
        "members",
    )

    def __init__(
        self,
        group_expiry: float,
        subscribe: Callable[[str], Awaitable[None]],
        unsubscribe: Callable[[str], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], object],
    ) -> None:
        self._group_expiry = group_expiry
        self._subscribe = subscribe  # the broker subscription of a group, confirmed
        self._unsubscribe = unsubscribe
        self._spawn = spawn  # background work the owner finishes when it closes
        #: group -> {local channel -> membership deadline (monotonic)}
        self.members: dict[str, dict[str, float]] = {}
        #: group -> no membership of it expires before this (a lower bound: renewals only
        #: push deadlines later), so that a message need not look at every deadline
        self._next_expiry: dict[str, float] = {}
        self._subscriptions: dict[str, SharedAttempt[None]] = {}

    async def add(self, group: str, channel: str) -> None:
        deadline = monotonic() + self._group_expiry
        self.members.setdefault(group, {})[channel] = deadline
        self._next_expiry[group] = min(self._next_expiry.get(group, deadline), deadline)
        subscription = self._subscriptions.get(group)
        if subscription is None:
            subscription = self._subscriptions[group] = SharedAttempt(
                lambda: self._subscribe_group(group)
            )
        await subscription()

    async def _subscribe_group(self, group: str) -> None:
        await self._subscribe(group)

    def discard(self, group: str, channel: str) -> None:
        members = self.members.get(group)
        if members is None or members.pop(channel, None) is None or members:
            return
        del self.members[group]
        self._next_expiry.pop(group, None)
        if group in self._subscriptions:
            # Unsubscribe later, outside whatever synchronous path noticed the emptiness.
            self._spawn(self._unsubscribe_if_empty(group))

    def forget_channel(self, channel: str) -> None:
        """``channel`` is gone (swept): out of every group."""
        for group in [g for g, members in self.members.items() if channel in members]:
            self.discard(group, channel)

    async def _unsubscribe_if_empty(self, group: str) -> None:
        subscription = self._subscriptions.get(group)
        if subscription is None or group in self.members:
            return
        await subscription.wait()  # a subscription still being made: let it land first
        if group not in self.members and self._subscriptions.get(group) is subscription:
            del self._subscriptions[group]
            await self._unsubscribe(group)

    def recipients(self, group: str) -> Collection[str]:
        """The members of ``group`` a message sent now reaches, expired memberships pruned first.

        The live collection, not a copy (a group of thousands is iterated once per message):
        iterate it at once, without awaiting, and do not keep it."""
        members = self.members.get(group)
        if not members:
            return ()
        now = monotonic()
        if now >= self._next_expiry.get(group, 0.0):
            for channel in [c for c, deadline in members.items() if deadline < now]:
                self.discard(group, channel)
            if group in self.members:
                self._next_expiry[group] = min(members.values())
        return members

    def local_members(self, group: str) -> list[str]:
        """The unexpired members of ``group`` in this process."""
        now = monotonic()
        return [channel for channel, until in self.members.get(group, {}).items() if until > now]

    def sizes(self) -> dict[str, int]:
        """Members per group (a copy: safe to read from another thread)."""
        sizes = {group: len(members) for group, members in list(self.members.items())}
        return {group: size for group, size in sizes.items() if size}

    async def clear(self) -> None:
        """Forget every membership and subscription (``flush``)."""
        subscribed = list(self._subscriptions)
        self.members.clear()
        self._next_expiry.clear()
        subscriptions, self._subscriptions = self._subscriptions, {}
        await asyncio.gather(*(s.wait() for s in subscriptions.values()))
        for group in subscribed:
            await self._unsubscribe(group)
