"""The registry of live processes on Redis: one sorted set, scored by expiry, on the server's clock.

``P:p:processes`` holds one member per process that has announced itself, scored with the
millisecond (Redis ``TIME``) its entry expires. Announcing renews the score and prunes expired
members; listing reads the members whose score is still ahead of ``TIME``. Scripts do both in
one step, so clocks of application hosts never matter. The key itself expires ``ttl`` after the
last announcement, so a prefix nobody uses leaves nothing behind. The key lives on one server
(one shard of a sharded layer; one slot of a cluster).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .base import ProcessRegistry

#: KEYS[1] the set, ARGV[1] pid, ARGV[2] ttl in ms.
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
#: KEYS[1] the set. Returns the pids whose entries have not expired.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
_RETRACT = "redis.call('ZREM', KEYS[1], ARGV[1]) return 1"

#: ``eval(script, key, *args)``: run a script on the server that holds ``key``.
Eval = Callable[..., Awaitable[Any]]


def registry_key(prefix: str) -> str:
    return f"{prefix}:p:processes"


class RedisRegistry(ProcessRegistry):
    """``eval_script`` runs a script and returns its answer; ``send_script`` sends one without
    waiting for the answer (for ``retract``)."""

    def __init__(self, key: str, eval_script: Eval, send_script: Eval) -> None:
        self._key = key
        self._eval = eval_script
        self._send = send_script

    async def announce(self, pid: str, ttl: float) -> None:
        await self._eval(_ANNOUNCE, self._key, pid, max(1, int(ttl * 1000)))

    async def retract(self, pid: str) -> None:
        await self._send(_RETRACT, self._key, pid)

    async def announced(self) -> list[str]:
        members = await self._eval(_LIVE, self._key)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members or ()]
