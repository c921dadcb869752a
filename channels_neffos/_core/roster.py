"""The roster of live processes, for presence: who is in a group, on every process, exact as
soon as ``group_add`` has returned (``group_members``, ``group_size``, ``layer.instances()``).

Mechanism: a **registry of live processes on the broker** plus **scatter-gather with a known
number of responders**.

* A process *announces* itself in the broker's registry (a Redis sorted set, a NATS JetStream
  key-value bucket; see ``transports/*_registry.py``) before its first local ``group_add``
  returns, renews the entry every ``PROCESS_TTL / 3`` seconds, and retracts it when it closes.
  An entry that is not renewed expires on the broker after ``PROCESS_TTL`` seconds.
* ``group_members``/``group_size`` read the registry, then ask each listed process (on its own
  subject, ``P.<pid>.p``) for its members of the group, and wait for exactly those answers. The
  asking process answers for itself without the broker. Each process filters out memberships
  past ``group_expiry``.

Guarantees and bounds:

* **Exact after group_add/group_discard return**, from any process: the member's process was in
  the registry before ``group_add`` returned, and answers from its current state.
* **A process that closed** has retracted: its members are gone at once.
* **A process that died** (SIGKILL): the broker drops its connection and its subscriptions, so
  the ask finds no responders (NATS' 503, Redis' receiver count 0) and it is left out at once.
  A process on a **lost host**, whose connection the broker still believes open, stays listed
  until its entry expires (``PROCESS_TTL`` = 12 s); meanwhile asks to it wait ``ANSWER_TIMEOUT``
  and leave it out (counted in ``layer.counters["presence_timeout"]`` and logged). Pids are
  random per process, so a dead process never comes back.
* **Broker restart**: a restarted Redis (without persistence) or NATS (memory bucket) has an empty
  registry until each process reconnects and announces itself again, which it does at once.
* **Cost**: a join or leave costs the broker nothing (the process's first membership costs one
  announcement); a query costs one registry read and one small request per process that holds
  any group; broker memory is one entry per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._aio import SharedAttempt
from .._drops import RateLimitedLog
from ..exceptions import (
    AskError,
    AskTimeout,
    BrokerUnavailable,
    NoResponders,
    PermissionDenied,
    PresenceUnavailable,
)
from ..transports.base import ProcessRegistry, RegistryUnavailable

logger = logging.getLogger("channels_neffos")
_slow = RateLimitedLog(logger, logging.WARNING)

#: Seconds a process stays listed after its last announcement (renewed every third of it).
PROCESS_TTL = 12.0
#: Seconds a query waits for one process's answer before leaving it out.
ANSWER_TIMEOUT = 2.0
#: The membership-change operations that ask a process about a group (see envelope.CONTROL_OPS).
MEMBERS = "group_members"
SIZE = "group_size"
#: Asks a process for its ProcessStats (see channels_neffos.stats); the group is "".
PROCESS_STATS = "process_stats"
#: The questions a process answers about itself.
QUESTIONS = (MEMBERS, SIZE, PROCESS_STATS)

#: ``ask(pid, question, group)``: the answer of another process (raises NoResponders,
#: AskTimeout or AskError as a request does).
Ask = Callable[[str, str, str], Awaitable[Any]]


class Roster:
    """One process's part in presence: its registry entry, and the queries it makes."""

    def __init__(
        self,
        registry: Callable[[], ProcessRegistry],
        pid: str,
        url: str,
        ask: Ask,
        local_answer: Callable[[str, str], Any],
        count: Callable[[str], None],
        *,
        enabled: bool = True,
    ) -> None:
        self._registry_factory = registry
        self._registry: ProcessRegistry | None = None
        self._pid = pid
        self._url = url
        self._ask_process = ask
        self._local_answer = local_answer
        self._count = count
        self._announced = False
        self._unavailable: RegistryUnavailable | None = (
            None if enabled else RegistryUnavailable("presence is off in this layer's CONFIG")
        )
        self._renewal: asyncio.Task[None] | None = None
        self._first_announcement = SharedAttempt(self._announce_first)

    def _get_registry(self) -> ProcessRegistry:
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    async def ensure_announced(self) -> None:
        """Be listed before the first membership of this process is visible (see above).

        One announcement, however many first memberships ask for it at once (they all wait for
        it); if it fails the broker's way (``BrokerUnavailable``) the next one tries again."""
        if not self._announced and self._unavailable is None:
            await self._first_announcement()

    async def _announce_first(self) -> None:
        try:
            await self._get_registry().announce(self._pid, PROCESS_TTL)
        except (RegistryUnavailable, PermissionDenied) as exc:
            # Groups work without presence; presence queries will say why they cannot.
            self._unavailable = RegistryUnavailable(str(exc))
            logger.warning(
                "presence is not available, group_members/group_size will raise: %s (set "
                "CONFIG presence=False if you do not use it)",
                exc,
            )
            return
        self._announced = True
        if self._renewal is None:
            self._renewal = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(PROCESS_TTL / 3)
            await self.announce_again()

    async def announce_again(self) -> None:
        """Renew the entry (also at once after a reconnect: the broker may have lost it)."""
        if not self._announced:
            return
        try:
            await self._get_registry().announce(self._pid, PROCESS_TTL)
        except (BrokerUnavailable, RegistryUnavailable) as exc:
            logger.debug("presence: renewing this process's entry failed: %s", exc)

    async def close(self) -> None:
        await self._first_announcement.cancel()
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
            self._renewal = None
        if self._announced:
            self._announced = False
            try:  # sent, not awaited: see ProcessRegistry.retract
                await asyncio.wait_for(self._get_registry().retract(self._pid), ANSWER_TIMEOUT)
            except (BrokerUnavailable, RegistryUnavailable, asyncio.TimeoutError) as exc:
                logger.debug("presence: retracting this process failed (it expires): %s", exc)

    async def gather(self, operation: str, group: str) -> list[Any]:
        """The answer of every live process (this one included) about ``group``."""
        if self._unavailable is not None:
            raise PresenceUnavailable(self._url, self._unavailable)
        try:
            pids = await self._get_registry().announced()
        except (RegistryUnavailable, PermissionDenied) as exc:
            raise PresenceUnavailable(self._url, exc) from exc
        others = [pid for pid in pids if pid != self._pid]
        answers = await asyncio.gather(*(self._ask(pid, operation, group) for pid in others))
        return [self._local_answer(operation, group), *(a for a in answers if a is not None)]

    async def _ask(self, pid: str, operation: str, group: str) -> Any:
        try:
            return await self._ask_process(pid, operation, group)
        except NoResponders:
            return None  # the process is gone (its entry expires): it has no members
        except AskTimeout:
            self._count("presence_timeout")
            _slow(
                "timeout",
                "presence: %d answer(s) missing; process %s did not answer within %s s (a lost "
                "host? it is left out until its entry expires)",
                pid,
                ANSWER_TIMEOUT,
            )
            return None
        except AskError as exc:
            if operation == PROCESS_STATS:
                logger.info("process %s cannot tell its stats (an older version?): %s", pid, exc)
                return None
            raise AskError(
                f"process {pid} could not answer a presence query ({exc}); does it run an "
                f"older channels_neffos without presence?"
            ) from exc
