"""Connecting to Redis: pools from ``hosts`` entries, secrets masked, refusals told apart.

* :func:`connection_source` makes where connections for one ``hosts`` entry (a URL or a dict
  of connection options) come from, and the address to show for it, with every secret masked
  (:func:`redact_redis_url`, :func:`host_secrets`).
* A dict entry with ``sentinels`` and ``master_name`` is a master found through Redis Sentinel:
  its pool and address come from :mod:`channels_neffos.transports.sentinel`
  (``redis+sentinel://host:port,host:port/master_name``, never with credentials), and its
  secrets include the password in ``sentinel_kwargs``.
* :func:`classify` is the one place that decides what a ``BrokerUnavailable`` says: its
  ``cause`` — ``"authentication"`` (``WRONGPASS``/``NOAUTH``, redis-py's authentication errors),
  ``"TLS verification"`` (a certificate that does not verify, a TLS alert, a handshake the
  server drops because it wants a client certificate), ``"permission"`` (``NOPERM``),
  ``"error"`` (any other error reply), else ``"unreachable"`` — and the reason shown with it;
  :class:`BrokerErrors` is the one place a Redis transport turns what redis-py, the socket or an
  error reply raised into that exception.
* Every connection source — a plain server, cluster seeds, a Sentinel master — is a
  :class:`~channels_neffos.transports._resp.ConnectionSource`; :class:`PoolSource` makes a
  redis-py pool one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import hiredis
from redis.asyncio.connection import ConnectionPool, SSLConnection
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
    RedisError,
)

from ..exceptions import BrokerUnavailable, PermissionDenied
from ._resp import ConnectionSource, Pause
from .sentinel import SentinelRefused, is_sentinel_host, sentinel_address, sentinel_pool

#: Connection options and URL query keys whose values are secrets.
_SECRET_OPTIONS = ("password", "ssl_password")
#: Where a connection that TLS refused shows it: the server closed it during the handshake.
_DROPPED_HANDSHAKE = (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)


class RedisCommandError(RedisError):
    """Redis answered a command with an error reply."""


#: What redis-py, the socket, the RESP reader and a timeout raise when Redis fails us.
REDIS_FAILURES = (OSError, RedisError, hiredis.ReplyError, asyncio.TimeoutError)


class BrokerErrors:
    """``with errors:`` — whatever Redis raises in the block leaves it as the
    ``BrokerUnavailable`` (``PermissionDenied``...) that ``convert`` makes of it.

    ``convert`` sets the new error's ``__cause__`` (or leaves it None: an error whose text shows
    a secret is not chained); its ``__context__`` is made the same, so the original error is not
    reachable through it either. Reusable and re-entrant: it keeps no state.
    """

    __slots__ = ("_convert",)

    def __init__(self, convert: Callable[[BaseException], BrokerUnavailable]) -> None:
        self._convert = convert

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: object, exc: BaseException | None, traceback: object
    ) -> Literal[False]:
        if exc is None or isinstance(exc, BrokerUnavailable) or not isinstance(exc, REDIS_FAILURES):
            return False
        error = self._convert(exc)
        try:
            raise error
        finally:
            error.__context__ = error.__cause__  # not the original: it may show a secret


class ErrorConversion:
    """The one place a Redis transport turns a failure into the ``BrokerUnavailable`` it raises:
    classified (:func:`classify`), its text scrubbed of ``secrets``, chained to the original
    only if nothing in that chain shows one. ``errors`` and ``connect_errors`` apply it to a
    ``with`` block (the latter for a connection's handshake)."""

    def __init__(self, url: str, secrets: frozenset[str]) -> None:
        self.url = url
        self._secrets = secrets
        self._tls = "rediss://" in url or "rediss+sentinel://" in url
        self.errors = BrokerErrors(self.converted)
        self.connect_errors = BrokerErrors(lambda exc: self.converted(exc, connecting=True))

    def broker_unavailable(
        self, exc: BaseException, *, connecting: bool = False
    ) -> BrokerUnavailable:
        """The BrokerUnavailable (PermissionDenied for a permission) that ``exc`` means."""
        cause, reason = classify(exc, tls=self._tls, connecting=connecting)
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        if cause == "permission":
            return PermissionDenied(self.url, reason)
        return BrokerUnavailable(self.url, reason, cause=cause)

    def converted(self, exc: BaseException, *, connecting: bool = False) -> BrokerUnavailable:
        """:meth:`broker_unavailable`, chained to ``exc`` unless that would show a secret."""
        error = self.broker_unavailable(exc, connecting=connecting)
        error.__cause__ = self.chainable(exc)
        return error

    def chainable(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain under our error, or None if any error in its chain shows a secret."""
        for error in error_chain(exc):
            shown = f"{error!s} {error!r} {error.args!r}"
            if any(secret in shown for secret in self._secrets):
                return None
        return exc


class PoolSource:
    """A redis-py pool as a :class:`~channels_neffos.transports._resp.ConnectionSource`: a
    server that never moves (no failovers to follow)."""

    def __init__(self, host: str | dict[str, Any], pool: ConnectionPool) -> None:
        self._host = host
        self._pool = pool

    @property
    def failovers(self) -> None:
        return None

    def make_connection(self) -> Any:
        return self._pool.make_connection()

    async def disconnect(self) -> None:
        await self._pool.disconnect()

    @asynccontextmanager
    async def master_watch(self) -> AsyncIterator[Pause]:
        yield asyncio.sleep

    def blocking_pool(self) -> ConnectionPool:
        """A pool of its own on the same server, for blocking commands."""
        pool, _ = redis_pool(self._host)
        return pool


def redact_redis_url(url: str) -> str:
    """``url`` with its password — and a user part standing alone, which redis-py would take as
    a user name but is often a misplaced password — as ``***``, and secret query values too.
    Also for ``unix://:password@/path`` URLs, which have no host name."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, where = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{where}" if has_password else f"***@{where}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key in _SECRET_OPTIONS for key, _ in pairs):
            masked = [(key, "***" if key in _SECRET_OPTIONS else value) for key, value in pairs]
            query = urlencode(masked, safe="*/")
    if netloc == parts.netloc and query == parts.query:
        return url
    # Built by hand: urlunsplit would drop the "//" of "unix:///path" (an empty host).
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def host_secrets(host: str | dict[str, Any]) -> frozenset[str]:
    """The secrets one ``hosts`` entry configures (passwords in its URL or options)."""
    found: list[Any] = []
    options = {"address": host} if isinstance(host, str) else host
    address = options.get("address")
    if isinstance(address, str):
        parts = urlsplit(address)
        found += [parts.password, parts.username if parts.password is None else None]
        found += [v for k, v in parse_qsl(parts.query) if k in _SECRET_OPTIONS]
    found += [options.get(key) for key in _SECRET_OPTIONS]
    sentinel_options = options.get("sentinel_kwargs")
    if isinstance(sentinel_options, dict):  # the sentinels' own password
        found += [sentinel_options.get(key) for key in _SECRET_OPTIONS]
    return frozenset(secret for secret in found if isinstance(secret, str) and secret)


def connection_source(host: str | dict[str, Any]) -> tuple[ConnectionSource, str]:
    """Where the connections for one ``hosts`` entry come from, and its address with the
    secrets masked."""
    if is_sentinel_host(host):
        return sentinel_pool(host, _DEFAULTS), sentinel_address(host)
    pool, where = redis_pool(host)
    return PoolSource(host, pool), where


_DEFAULTS: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": 5}


def redis_pool(host: str | dict[str, Any]) -> tuple[ConnectionPool, str]:
    """A redis-py pool for one plain ``hosts`` entry (not Sentinel), and its address with the
    secrets masked."""
    defaults = _DEFAULTS
    if isinstance(host, str):
        return ConnectionPool.from_url(host, **defaults), redact_redis_url(host)
    options = dict(host)
    address = options.pop("address", None)
    if isinstance(address, str):
        pool = ConnectionPool.from_url(address, **{**defaults, **options})
        return pool, redact_redis_url(address)
    if isinstance(address, (tuple, list)):
        options["host"], options["port"] = address
    pool = ConnectionPool(**{**defaults, **options})
    connection_class = options.get("connection_class")
    tls = isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
    if options.get("path"):
        where = f"unix://{options['path']}"
    else:
        scheme = "rediss" if tls else "redis"
        where = f"{scheme}://{options.get('host', 'localhost')}:{options.get('port', 6379)}"
    user = options.get("username")
    if options.get("password"):
        where = where.replace("://", f"://{user or ''}:***@", 1)
    elif user:
        where = where.replace("://", f"://{user}@", 1)
    return pool, where


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException, *, tls: bool, connecting: bool = False) -> tuple[str, str]:
    """``(cause, reason)`` for a failure of redis-py, ``ssl`` or an error reply: the one place
    that decides what a BrokerUnavailable says (see the module docstring for the causes).
    ``connecting``: ``exc`` ended a connection's handshake (not a connection in use)."""
    chain = list(error_chain(exc))
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return "TLS verification", f"the server's certificate: {error.verify_message}"
    for error in chain:
        if isinstance(error, ssl.SSLError):
            return "TLS verification", str(error)
        if isinstance(error, SentinelRefused):  # before AuthenticationError: says whose
            return "authentication", str(error)
        if isinstance(error, (AuthenticationError, AuthenticationWrongNumberOfArgsError)):
            return "authentication", f"Redis says: {str(error).rstrip('.')}"
        if isinstance(error, NoPermissionError):
            return "permission", f"Redis says: {error}"
        if isinstance(error, (hiredis.ReplyError, RedisCommandError)):
            code, _, text = str(error).partition(" ")
            if code == "NOPERM":
                return "permission", f"Redis says: {text}"
            if code in ("WRONGPASS", "NOAUTH"):
                return "authentication", f"Redis says: {text}"
            return "error", f"Redis says: {error}"
    dropped = connecting and any(isinstance(error, _DROPPED_HANDSHAKE) for error in chain)
    if tls and dropped:
        return "TLS verification", (
            "the server closed the connection during the TLS handshake, as it does when it "
            "requires a client certificate (ssl_certfile, ssl_keyfile) signed by a CA it trusts"
        )
    if dropped:  # a TLS-only port drops a plain connection the same way
        return "unreachable", f"{exc} (if the server wants TLS, use a rediss:// URL)"
    return "unreachable", str(exc)
