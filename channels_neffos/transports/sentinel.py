"""Redis Sentinel: a master found through its sentinels, and followed through failovers.

A ``hosts`` entry ``{"sentinels": [(host, port), ...], "master_name": ..., "sentinel_kwargs":
{...}, <master connection options>}`` (spelled as in ``channels_redis``) becomes a
:class:`SentinelMasterPool` (:func:`sentinel_pool`; checked by :func:`check_sentinel_host`,
shown as :func:`sentinel_address`, ``redis+sentinel://h1:p1,h2:p2/master_name``, never with
credentials). What it guarantees:

* **Only the master is used.** Each new connection asks every sentinel at once and takes the
  master named with the highest ``config-epoch`` (during a failover a sentinel that has not yet
  heard of it names the old one, and one that sees the master down is not believed), then
  checks ``ROLE`` on it: a server that is not the master fails the attempt
  (:class:`NotTheMaster`) and the caller's reconnect loop tries again. So a connection never
  settles on a replica, where a ``PUBLISH`` is accepted but reaches only that replica's
  subscribers, nor on a demoted master. (The user needs ``+role`` for that check.)
* **Failovers are noticed at once** (:class:`MasterSwitchWatch`): while a transport lives (after
  its first second, so that short-lived event loops do not pay for it) and while any of its
  connections reconnects, it subscribes to ``+switch-master`` on every sentinel. An
  announcement wakes the reconnect loops waiting between attempts, and ends connections still
  open to another server: after a *graceful* failover (``SENTINEL FAILOVER``) the old master
  keeps serving its clients for ~10 s until the sentinels demote it, and a process staying there
  while new connections go to the new master would split the application in two. The
  announcement only speeds things up: without it, connections follow within one backoff step
  (≤ 1 s) of the old master's death, or when Sentinel closes them on demoting it.
* **Refusals are named**: no sentinel reachable, or none knowing ``master_name`` —
  :class:`~redis.asyncio.sentinel.MasterNotFoundError` listing, sentinel by sentinel, what each
  said (``cause="unreachable"``); a sentinel refusing the password in ``sentinel_kwargs`` —
  :class:`SentinelRefused` (``cause="authentication"``); the master refusing its password —
  redis-py's ``AuthenticationError``.

What it cannot guarantee is Sentinel's to answer for. Replication is asynchronous: a list push (a
worker-channel message) that a master confirmed and died before its replica copied is lost, and
a pop it answered may come back on the new master. During a graceful failover the old master
serves on between the promotion of the replica and the ``+switch-master`` announcement (~1 s:
Sentinel's ``INFO`` period): items pushed there in that window and still in the list when the
layer moves are lost when the old master resynchronises from the new one, and items that were
in the list at the promotion and popped there come back (delivered twice). A master cut off
from the sentinels by a partition, rather than dead, keeps the clients that still reach it
until the partition heals and Sentinel demotes it (``min-replicas-to-write`` on the servers
bounds what they write meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard
from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger("channels_neffos.redis")

#: Keys a Sentinel entry cannot take: the sentinels say where the master is.
_ADDRESS_KEYS = ("address", "host", "port", "path", "unix_socket_path", "connection_class")
#: Options for the connections to the sentinels, under the user's ``sentinel_kwargs``: no retries
#: of redis-py's own (a dead sentinel must not hold up the answer of the others), bounded waits.
_SENTINEL_DEFAULTS: dict[str, Any] = {
    "protocol": 2,
    "socket_connect_timeout": 5,
    "socket_timeout": 5,
    "retry": Retry(NoBackoff(), 0),
}

OnSwitch = Callable[[str, int], None]


def is_sentinel_host(host: object) -> TypeGuard[dict[str, Any]]:
    """Whether a ``hosts`` entry names its master through sentinels."""
    return isinstance(host, dict) and ("sentinels" in host or "master_name" in host)


def _kind(value: object) -> str:
    """How an error message shows a wrong value: a str only by its type (it may be a secret)."""
    return f"a {type(value).__name__}" if isinstance(value, (str, bytes)) else repr(value)


def check_sentinel_host(host: dict[str, Any]) -> None:
    """Raise ``TypeError``/``ValueError`` saying what is wrong with a Sentinel ``hosts`` entry."""
    example = "{'sentinels': [('10.0.0.1', 26379), ...], 'master_name': 'mymaster'}"
    if "sentinels" not in host or "master_name" not in host:
        missing = "sentinels" if "sentinels" not in host else "master_name"
        raise TypeError(f"a Sentinel entry of hosts needs {missing!r} too: {example}")
    sentinels = host["sentinels"]
    if not isinstance(sentinels, (list, tuple)) or not sentinels:
        raise TypeError(
            f"sentinels must be a non-empty list of (host, port) pairs, got {_kind(sentinels)}"
        )
    for pair in sentinels:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or type(pair[1]) is not int
        ):
            raise TypeError(
                "each of sentinels must be a (host, port) pair such as ('10.0.0.1', 26379), "
                f"got {_kind(pair)}"
            )
        if not pair[0]:
            raise ValueError(f"a sentinel's host must not be empty, got {pair!r}")
        if not 0 < pair[1] < 65536:
            raise ValueError(f"a sentinel's port must be 1-65535, got {pair!r}")
    master_name = host["master_name"]
    if not isinstance(master_name, str):
        raise TypeError(
            "master_name must be the name the sentinels monitor the master under (a str, as "
            f"in 'sentinel monitor <master_name> ...'), got a {type(master_name).__name__}"
        )
    if not master_name.strip():
        raise ValueError("master_name must not be empty")
    sentinel_kwargs = host.get("sentinel_kwargs")
    if sentinel_kwargs is not None and not isinstance(sentinel_kwargs, dict):
        raise TypeError(
            "sentinel_kwargs must be a dict of redis-py connection options for the sentinels "
            f"(e.g. {{'password': ...}}), got a {type(sentinel_kwargs).__name__}"
        )
    misplaced = [key for key in _ADDRESS_KEYS if key in host]
    if misplaced:
        raise TypeError(
            f"a Sentinel entry of hosts takes no {misplaced[0]!r}: the sentinels tell where the "
            "master is (its other keys are connection options for the master: password, "
            "username, db, ssl, ssl_ca_certs...)"
        )
    if not host.get("ssl") and any(key.startswith("ssl_") for key in host):
        raise TypeError("ssl_* options of a Sentinel entry need 'ssl': True as well")


def sentinel_address(host: dict[str, Any]) -> str:
    """``redis+sentinel://h1:p1,h2:p2/master_name``: where a Sentinel entry points, no secrets."""
    where = ",".join(
        f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name, port in host["sentinels"]
    )
    scheme = "rediss+sentinel" if host.get("ssl") else "redis+sentinel"
    return f"{scheme}://{where}/{quote(host['master_name'], safe='')}"


def sentinel_pool(host: dict[str, Any], defaults: dict[str, Any]) -> SentinelMasterPool:
    """The pool for a Sentinel entry: its master's connections (``defaults`` under the entry's
    options), found through its sentinels."""
    check_sentinel_host(host)
    options = dict(host)
    sentinels = [(name, port) for name, port in options.pop("sentinels")]
    master_name = options.pop("master_name")
    sentinel_options = {**_SENTINEL_DEFAULTS, **(options.pop("sentinel_kwargs", None) or {})}
    group = SentinelGroup(sentinels, sentinel_kwargs=sentinel_options)
    return SentinelMasterPool(master_name, group, **{**defaults, **options})


class NotTheMaster(RedisConnectionError):
    """The server the sentinels named is not (or no longer) the master: try again."""


class SentinelRefused(AuthenticationError):
    """A sentinel refused the credentials in ``sentinel_kwargs``."""


class SentinelGroup(Sentinel):
    """redis-py's ``Sentinel``, asking every sentinel at once and believing the newest answer.

    During a failover the sentinels disagree for a moment (each learns of the new master from
    the others' hello messages, within about 2 s): the answer with the highest ``config-epoch``
    is the newest. When no sentinel names a master,
    :class:`~redis.asyncio.sentinel.MasterNotFoundError` says, sentinel by sentinel, why —
    chained to a :class:`SentinelRefused` if one refused our credentials.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watches: dict[str, MasterSwitchWatch] = {}

    def watch(self, service_name: str) -> MasterSwitchWatch:
        """The one :class:`MasterSwitchWatch` of ``service_name`` on these sentinels."""
        watch = self._watches.get(service_name)
        if watch is None:
            watch = self._watches[service_name] = MasterSwitchWatch(self.sentinels, service_name)
        return watch

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = await asyncio.gather(
            *(
                sentinel.execute_command("SENTINEL MASTER", service_name)
                for sentinel in self.sentinels
            ),
            return_exceptions=True,
        )
        newest: tuple[int, str, int] | None = None
        problems: list[str] = []
        refused: SentinelRefused | None = None
        for sentinel, answer in zip(self.sentinels, answers, strict=True):
            where = _sentinel_where(sentinel)
            if isinstance(answer, AuthenticationError):
                refused = refused or SentinelRefused(
                    f"the sentinel at {where} refused the credentials in sentinel_kwargs: {answer}"
                )
                problems.append(f"{where}: refused our credentials")
            elif isinstance(answer, ResponseError):
                problems.append(f"{where}: {answer}")  # e.g. "No such master with that name"
            elif isinstance(answer, BaseException):
                if not isinstance(answer, (OSError, RedisError, asyncio.TimeoutError)):
                    raise answer
                problems.append(f"{where}: unreachable ({answer})")
            elif not isinstance(answer, dict):
                problems.append(f"{where}: unexpected answer {answer!r}")
            elif not answer.get("is_master") or answer.get("is_sdown") or answer.get("is_odown"):
                problems.append(f"{where}: sees the master down (a failover may be under way)")
            else:
                epoch = int(answer.get("config-epoch", 0))
                if newest is None or epoch > newest[0]:
                    newest = (epoch, str(answer["ip"]), int(answer["port"]))
        if newest is not None:
            return newest[1], newest[2]
        message = f"no sentinel names a master for {service_name!r} ({'; '.join(problems)})"
        if refused is not None:
            raise MasterNotFoundError(message) from refused
        raise MasterNotFoundError(message)

    async def close(self) -> None:
        """Close the connections to the sentinels (the watches' subscriptions too)."""
        for watch in self._watches.values():
            await watch.stop()
        await asyncio.gather(
            *(sentinel.connection_pool.disconnect() for sentinel in self.sentinels),
            return_exceptions=True,
        )


def _sentinel_where(sentinel: Redis) -> str:
    options = sentinel.connection_pool.connection_kwargs
    return f"{options.get('host')}:{options.get('port')}"


class SentinelMasterConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, used only once ``ROLE`` confirms it."""

    connection_pool: SentinelMasterPool

    async def connect_to(self, address: tuple[str, int]) -> None:
        await super().connect_to(address)
        try:
            role = await self._role()
        except BaseException:
            await self.disconnect()
            raise
        if role != "master":
            await self.disconnect()
            host, port = address
            raise NotTheMaster(
                f"{host}:{port}, which the sentinels name as master of "
                f"{self.connection_pool.service_name!r}, is a {role} (a failover is under way)"
            )

    async def _role(self) -> str:
        await self.send_command("ROLE", check_health=False)
        try:
            reply = await self.read_response()
        except NoPermissionError as exc:
            raise NoPermissionError(
                f"{exc} (under Sentinel, the layer's user needs +role: it checks that each "
                "connection reached the master)"
            ) from exc
        if isinstance(reply, list) and reply and isinstance(reply[0], (bytes, str)):
            kind = reply[0]
            return kind.decode() if isinstance(kind, bytes) else kind
        return f"server answering ROLE with {reply!r}"


class SentinelMasterSSLConnection(SentinelMasterConnection, SSLConnection):
    pass


class MasterSwitchWatch:
    """Listens for the sentinels' ``+switch-master`` of one master while anyone needs it.

    Users: reconnect loops (``async with watch as pause``: :meth:`pause` between attempts
    returns early on an announcement) and transports (:meth:`follow`: their callback gets the
    new master's ``(host, port)``). It subscribes on every sentinel — the one that led the
    failover announces it first — from the first user to the last; a sentinel it cannot reach
    is retried every second. Several sentinels announce the same switch: callbacks must not
    mind hearing it more than once.
    """

    #: How often a listener wakes to notice it was stopped, and how long it waits before
    #: retrying a sentinel it cannot reach.
    _POLL = 1.0

    def __init__(self, sentinels: list[Redis], service_name: str) -> None:
        self._sentinels = sentinels
        self._service_name = service_name.encode()
        self._users = 0
        self._followers: list[OnSwitch] = []
        self._listeners: list[asyncio.Task[None]] = []
        self._switched = asyncio.Event()

    def _acquire(self) -> None:
        self._users += 1
        if not self._listeners:
            self._listeners = [
                asyncio.ensure_future(self._listen(sentinel)) for sentinel in self._sentinels
            ]

    async def _release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            await self.stop()

    async def stop(self) -> None:
        self._users = 0
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    async def __aenter__(self) -> Callable[[float], Awaitable[None]]:
        self._acquire()
        return self.pause

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()

    def follow(self, on_switch: OnSwitch) -> None:
        """Call ``on_switch(host, port)`` whenever a new master is announced, until
        :meth:`unfollow`."""
        self._followers.append(on_switch)
        self._acquire()

    async def unfollow(self, on_switch: OnSwitch) -> None:
        if on_switch in self._followers:
            self._followers.remove(on_switch)
            await self._release()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a sentinel announces a new master meanwhile."""
        try:
            await asyncio.wait_for(self._switched.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _announced(self, data: bytes) -> None:
        # "<name> <old ip> <old port> <new ip> <new port>"
        fields = data.split()
        if len(fields) != 5 or fields[0] != self._service_name:
            return
        self._switched.set()  # wakes every pause() now waiting
        self._switched = asyncio.Event()
        host, port = fields[3].decode(), int(fields[4])
        for on_switch in list(self._followers):
            try:
                on_switch(host, port)
            except Exception:  # one follower's failure must not keep the news from the others
                logger.exception(
                    "channels_neffos could not follow the new master %s:%d", host, port
                )

    async def _listen(self, sentinel: Redis) -> None:
        while True:
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._POLL
                    )
                    data = message.get("data") if message else None
                    if isinstance(data, bytes):
                        self._announced(data)
            except (OSError, RedisError, asyncio.TimeoutError, ValueError):
                await asyncio.sleep(self._POLL)  # this sentinel is down: the others may speak
            finally:
                try:
                    await pubsub.aclose()
                except (OSError, RedisError):
                    pass


class SentinelMasterPool(SentinelConnectionPool):
    """A pool of connections to the master of ``service_name``, as its sentinels name it.

    Each new connection asks the sentinels (:class:`SentinelGroup`) and checks ``ROLE``
    (:class:`SentinelMasterConnection`). As a
    :class:`~channels_neffos.transports._resp.ConnectionSource` it offers: ``failovers`` and
    :meth:`SentinelMasterPool.master_watch`, the ``+switch-master`` watch of this master (see
    :class:`MasterSwitchWatch`; ``channels_neffos.transports._resp`` reconnects with it); and
    :meth:`blocking_pool`, another pool on the same sentinels that drops its connections when a
    new master is announced, so a ``BRPOP`` waiting on the old one fails and is retried.
    ``disconnect()`` (closing) also closes the connections to the sentinels;
    :meth:`drop_connections` closes only this pool's connections, to reopen them elsewhere.
    """

    sentinel_manager: SentinelGroup

    def __init__(self, service_name: str, sentinel_manager: SentinelGroup, **options: Any) -> None:
        self._options = dict(options)
        self._announced: tuple[str, int] | None = None
        self._dropping: asyncio.Task[None] | None = None
        self._follows_switches = False
        tls = bool(options.pop("ssl", False))
        options["connection_class"] = (
            SentinelMasterSSLConnection if tls else SentinelMasterConnection
        )
        super().__init__(service_name, sentinel_manager, **options)

    def master_watch(self) -> MasterSwitchWatch:
        return self.sentinel_manager.watch(self.service_name)

    @property
    def failovers(self) -> MasterSwitchWatch:
        return self.master_watch()

    def blocking_pool(self) -> SentinelMasterPool:
        """A new pool for the same master, on the same sentinels (and watch), that leaves a
        server as soon as the sentinels announce another master."""
        pool = SentinelMasterPool(self.service_name, self.sentinel_manager, **self._options)
        pool._follows_switches = True
        self.master_watch().follow(pool._switched)
        return pool

    def _switched(self, host: str, port: int) -> None:
        if (host, port) != self._announced:  # every sentinel announces it in turn
            self._announced = (host, port)
            self._dropping = asyncio.ensure_future(self.drop_connections())

    async def drop_connections(self) -> None:
        await super().disconnect(inuse_connections=True)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        # redis-py calls disconnect(inuse_connections=False) itself when the master moved:
        # only closing the pool (all connections) ends following.
        if inuse_connections and self._follows_switches:
            self._follows_switches = False
            await self.master_watch().unfollow(self._switched)
        if self._dropping is not None:
            await asyncio.gather(self._dropping, return_exceptions=True)
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing (not just a new master): the sentinels' sockets too
            await self.sentinel_manager.close()
