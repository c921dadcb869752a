"""The registry of live processes on NATS: a JetStream key-value bucket whose entries expire.

Bucket ``<prefix>_processes`` (memory storage, one value per key, ``max_age`` = the entries'
time to live): a process announces itself by putting its pid and renews by putting it again;
the server drops an entry ``max_age`` after its last put, so a process that dies without
retracting vanishes within it. Retracting purges the pid's subject from the bucket's stream (a
KV delete would leave a marker listed until it expires). Listing is one ``STREAM.INFO`` with a
subject filter: the subjects that hold a message are the live pids. (nats-py's ``keys()`` would
create a JetStream consumer per call, which the server keeps for minutes, and can return before
the entries arrive.)

A NATS restart empties a memory bucket; processes announce themselves again when they
reconnect, and an announcement recreates the bucket if it is gone.

On a cluster of three or more servers (the server's INFO names a cluster) the bucket gets three
replicas, so it survives the loss of one server. Until JetStream has elected a new leader for
it (5-9 s when the lost server led it; nothing when it did not), listing fails as an outage —
``BrokerUnavailable``, as any outage — never as ``RegistryUnavailable``,
which would switch presence off for good; an announcement waits for the election (up to 10 s),
so a process's first ``group_add`` then takes that long instead of failing. A bucket created
with one replica (by an older version, or on a smaller cluster) is used as it is: on a cluster
it lives on one server, and presence is unavailable while that server is down (``nats stream
edit KV_<prefix>_processes --replicas 3`` makes it replicated).

This needs JetStream: on a server without it (or an account without JetStream), the registry
raises :class:`~channels_neffos.transports.base.RegistryUnavailable` saying so. The JetStream
API subjects it uses are those ``channels_neffos.security.nats_permissions`` grants; its replies
come back under the layer's prefix (the transport sets nats-py's ``inbox_prefix``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.client import JetStreamContext

from ..exceptions import BrokerUnavailable
from .base import ProcessRegistry, RegistryUnavailable

logger = logging.getLogger("channels_neffos.nats")

#: JetStream's error code for "JetStream system temporarily unavailable" (a cluster without a
#: meta leader, for a moment), as opposed to JetStream not enabled at all.
_TEMPORARILY_UNAVAILABLE = 10008

#: How long one JetStream API call may take before the registry counts as unavailable.
_API_TIMEOUT = 2.0
#: How long an announcement waits on a cluster whose JetStream has no leader for the bucket:
#: nats-server's election timeout is 4-9 s.
_ELECTION_WAIT = 10.0

T = TypeVar("T")


class _Electing(BrokerUnavailable):
    """JetStream on a cluster has, for now, no leader for what we asked (see _errors)."""


def bucket_name(prefix: str) -> str:
    return f"{prefix}_processes"


def replicas_for(client: Client) -> int:
    """How many replicas the bucket gets: three on a cluster of three or more servers (it then
    survives the loss of one), else one. Told by the server's INFO: a clustered server names
    its cluster and lists the client URLs of the cluster's servers (``connect_urls``)."""
    info = getattr(client, "_server_info", None) or {}  # nats-py keeps the INFO here
    servers = info.get("connect_urls") or []
    return 3 if info.get("cluster") and len(servers) >= 3 else 1


class NatsRegistry(ProcessRegistry):
    def __init__(self, client: Callable[[], Client], bucket: str, url: str) -> None:
        self._client = client  # the transport's current client (a new one after a revival)
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._subject_prefix = f"$KV.{bucket}."
        self._url = url
        self._created: Client | None = None  # the client that last made sure the bucket exists
        self._creating = asyncio.Lock()
        self._generation = 0  # how many times this registry created the bucket

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """nats-py's JetStream errors as RegistryUnavailable (no JetStream) or BrokerUnavailable.

        On a cluster, JetStream is briefly unavailable after a server is lost, while the meta
        group or the bucket's stream elects a new leader: those errors (and timeouts) are
        ``BrokerUnavailable`` like any outage, never RegistryUnavailable, which switches a
        process's presence off for good.
        """
        try:
            yield
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            if getattr(exc, "err_code", None) == _TEMPORARILY_UNAVAILABLE:
                raise self._electing(doing) from exc
            raise RegistryUnavailable(
                f"NATS at {self._url} has no JetStream for this account, which presence needs "
                f"(start nats-server with -js, or enable JetStream for the account)"
            ) from exc
        except (nats.errors.TimeoutError, asyncio.TimeoutError) as exc:
            if self._clustered_jetstream():
                raise self._electing(doing) from exc
            raise RegistryUnavailable(
                f"NATS at {self._url}: no JetStream answer in {_API_TIMEOUT:g} s while {doing} "
                f"(is JetStream enabled, and may this user use the {self._bucket} bucket?)"
            ) from exc
        except nats.js.errors.NoStreamResponseError as exc:
            if self._clustered_jetstream():
                raise self._electing(doing) from exc
            raise BrokerUnavailable(self._url, f"presence, {doing}: {exc}") from exc
        except nats.errors.Error as exc:
            raise BrokerUnavailable(self._url, f"presence, {doing}: {exc}") from exc

    def _clustered_jetstream(self) -> bool:
        """Whether the server we are connected to runs JetStream in a cluster (its INFO)."""
        try:
            info = getattr(self._client(), "_server_info", None) or {}
        except ConnectionError:
            return False
        return bool(info.get("jetstream") and info.get("cluster"))

    def _electing(self, doing: str) -> _Electing:
        return _Electing(
            self._url,
            f"presence: JetStream did not answer while {doing}; a JetStream cluster that lost "
            f"a server elects new leaders within seconds",
        )

    async def _call(self, doing: str, call: Awaitable[T]) -> T:
        with self._errors(doing):
            return await call

    async def _create_bucket(self, ttl: float) -> None:
        client = self._client()
        js = client.jetstream(timeout=_API_TIMEOUT)
        replicas = replicas_for(client)
        while True:
            try:
                await self._call(
                    "creating the bucket",
                    js.create_key_value(
                        bucket=self._bucket,
                        ttl=ttl,
                        history=1,
                        storage=StorageType.MEMORY,
                        replicas=replicas,
                    ),
                )
            except ConnectionError as exc:
                cause = exc.__cause__
                if isinstance(cause, nats.js.errors.BadRequestError):
                    break  # it exists with other settings (another ttl, replicas): use it so
                if (
                    replicas > 1
                    and isinstance(cause, nats.js.errors.APIError)
                    and not isinstance(exc, _Electing)
                ):
                    # Not enough JetStream servers in the cluster (or not clustered after all):
                    # a bucket on one server still works while that server is up.
                    logger.warning(
                        "NATS at %s: cannot create the presence bucket %s with %d replicas "
                        "(%s); creating it with one",
                        self._url,
                        self._bucket,
                        replicas,
                        cause,
                    )
                    replicas = 1
                    continue
                raise
            break
        self._created = client

    async def announce(self, pid: str, ttl: float) -> None:
        """Put ``pid`` in the bucket, creating the bucket first if this client has not.

        Retried once after making sure the bucket exists (a restarted server's memory store
        has lost it); on a cluster, for up to ``_ELECTION_WAIT`` seconds while JetStream has
        no leader for it (a new bucket's first moments, or a lost server's election), so that a
        process's first ``group_add`` waits through a failover instead of failing.
        """
        subject = self._subject_prefix + pid
        deadline = time.monotonic() + (_ELECTION_WAIT if self._clustered_jetstream() else 0.0)
        generation, must_create = self._generation, self._created is not self._client()
        retries, delay = 0, 0.05
        while True:
            try:
                if must_create:
                    await self._create_bucket_once(ttl, generation)
                generation = self._generation  # the bucket this put goes to
                await self._call("announcing", self._js().publish(subject, b""))
                return
            except ConnectionError as exc:
                gone = isinstance(exc.__cause__, nats.js.errors.NoStreamResponseError)
                if not (gone or isinstance(exc, _Electing)):
                    raise
                if retries and time.monotonic() + delay > deadline:
                    raise
            if retries:
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.5)
            must_create, retries = True, retries + 1

    async def _create_bucket_once(self, ttl: float, generation: int) -> None:
        """Create the bucket unless another call has since ``generation``: a process's first
        group_adds announce it concurrently, and one creation is enough for all of them."""
        async with self._creating:
            if self._generation == generation:
                await self._create_bucket(ttl)
                self._generation += 1

    def _js(self) -> JetStreamContext:
        return self._client().jetstream(timeout=_API_TIMEOUT)

    async def retract(self, pid: str) -> None:
        # A purge request without a reply subject: the server applies it all the same.
        request = json.dumps({"filter": self._subject_prefix + pid}).encode()
        with contextlib.suppress(nats.errors.Error):  # not connected: the entry expires
            await self._client().publish(f"$JS.API.STREAM.PURGE.{self._stream}", request)

    async def announced(self) -> list[str]:
        js = self._client().jetstream(timeout=_API_TIMEOUT)
        try:
            info = await self._call(
                "listing processes", js.stream_info(self._stream, subjects_filter=">")
            )
        except ConnectionError as exc:
            if isinstance(exc.__cause__, nats.js.errors.NotFoundError):
                return []  # no bucket: nobody has announced itself (since a restart)
            raise
        start = len(self._subject_prefix)
        return [subject[start:] for subject in info.state.subjects or {}]
