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

This needs JetStream: on a server without it (or an account without JetStream), the registry
raises :class:`~channels_neffos.transports.base.RegistryUnavailable` saying so. The JetStream
API subjects it uses are those ``channels_neffos.security.nats_permissions`` grants; its replies
come back under the layer's prefix (the transport sets nats-py's ``inbox_prefix``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType

from .base import ProcessRegistry, RegistryUnavailable

#: How long one JetStream API call may take before the registry counts as unavailable.
_API_TIMEOUT = 2.0

T = TypeVar("T")


def bucket_name(prefix: str) -> str:
    return f"{prefix}_processes"


class NatsRegistry(ProcessRegistry):
    def __init__(self, client: Callable[[], Client], bucket: str, url: str) -> None:
        self._client = client  # the transport's current client (a new one after a revival)
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._subject_prefix = f"$KV.{bucket}."
        self._url = url
        self._created: Client | None = None  # the client that last made sure the bucket exists

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """nats-py's JetStream errors as RegistryUnavailable (no JetStream) or ConnectionError."""
        try:
            yield
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            raise RegistryUnavailable(
                f"NATS at {self._url} has no JetStream for this account, which presence needs "
                f"(start nats-server with -js, or enable JetStream for the account)"
            ) from exc
        except (nats.errors.TimeoutError, asyncio.TimeoutError) as exc:
            raise RegistryUnavailable(
                f"NATS at {self._url}: no JetStream answer in {_API_TIMEOUT:g} s while {doing} "
                f"(is JetStream enabled, and may this user use the {self._bucket} bucket?)"
            ) from exc
        except nats.errors.Error as exc:
            raise ConnectionError(f"presence on NATS at {self._url}, {doing}: {exc}") from exc

    async def _call(self, doing: str, call: Awaitable[T]) -> T:
        with self._errors(doing):
            return await call

    async def _create_bucket(self, ttl: float) -> None:
        js = self._client().jetstream(timeout=_API_TIMEOUT)
        try:
            await self._call(
                "creating the bucket",
                js.create_key_value(
                    bucket=self._bucket, ttl=ttl, history=1, storage=StorageType.MEMORY
                ),
            )
        except ConnectionError as exc:
            if not isinstance(exc.__cause__, nats.js.errors.BadRequestError):
                raise  # BadRequest: it exists with other settings (another ttl): use it so
        self._created = self._client()

    async def announce(self, pid: str, ttl: float) -> None:
        if self._created is not self._client():
            await self._create_bucket(ttl)
        js = self._client().jetstream(timeout=_API_TIMEOUT)
        subject = self._subject_prefix + pid
        try:
            await self._call("announcing", js.publish(subject, b""))
        except ConnectionError as exc:
            if not isinstance(exc.__cause__, nats.js.errors.NoStreamResponseError):
                raise
            await self._create_bucket(ttl)  # gone: a restarted server's memory store
            await self._call("announcing", js.publish(subject, b""))

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
