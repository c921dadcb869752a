"""Payload encryption: a transport that seals every broker message with Fernet.

Set ``symmetric_encryption_keys`` (the ``channels_redis`` option name) to a list of secrets and
every payload this layer hands the broker is encrypted, every payload it takes from the broker
decrypted, by :class:`EncryptedTransport` — a wrapper around the real transport, so the core and
the brokers' transports know nothing of it.

* **What is sealed:** the whole broker message — message bodies *and* the envelope inside it
  (target channel and group names, the sender's pid, reply addresses), for process channels,
  groups, asks, replies and worker-channel queues alike. A frame of several envelopes is sealed
  once, so batching also makes encryption cheaper.
* **What is not:** broker *subjects*: the prefix, process ids, group names and worker-channel
  names a broker routes on are visible to whoever can watch the broker, as are message sizes and
  timing. Messages between channels of one process never reach the broker and are not encrypted.
* **Keys:** each secret (``str`` or ``bytes``, any length) becomes a Fernet key as
  ``urlsafe_b64encode(sha256(secret))`` — the derivation ``channels_redis`` uses, so a project
  keeps its secrets when it switches layers. The *first* key encrypts; *every* key is tried to
  decrypt (``MultiFernet``), so keys rotate without downtime: add the new key second everywhere,
  then move it first everywhere, then drop the old one.
* **What is lost:** a message no key opens (a peer with other keys, a forged or corrupted payload)
  is dropped, counted in ``layer.counters["undecryptable"]`` and logged at a limited rate.
  Fernet also authenticates: a payload changed on the way never decrypts.

Fernet's token is base64 of the ciphertext plus 57 bytes, so the largest message the broker can
carry shrinks by about a quarter (:attr:`EncryptedTransport.max_payload` says by how much).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import (
    HistoryLimits,
    HistorySlice,
    OnMessage,
    ProcessRegistry,
    Subject,
    Transport,
    TransportEvents,
    pack_positioned,
    unpack_positioned,
)

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

#: Fernet's fixed overhead before base64: version, timestamp, IV, HMAC, and up to a whole block
#: of padding.
_FERNET_OVERHEAD = 1 + 8 + 16 + 32 + 16


def fernet_for(keys: Any) -> MultiFernet:
    """A ``MultiFernet`` from ``symmetric_encryption_keys``; ``TypeError`` says what is wrong.

    Never shows a key: the messages name positions and types, not values.
    """
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) or not keys:
        raise TypeError(
            "symmetric_encryption_keys must be a non-empty list of secret strings (the first "
            "encrypts, every one decrypts), e.g. [env('CHANNELS_KEY')]"
        )
    for position, key in enumerate(keys):
        if not isinstance(key, (str, bytes)) or not key:
            raise TypeError(
                f"symmetric_encryption_keys[{position}] must be a non-empty str or bytes, "
                f"got {type(key).__name__}"
            )
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:
        raise ImportError(
            "symmetric_encryption_keys needs the 'cryptography' package: "
            "pip install 'channels-neffos[encryption]'"
        ) from exc
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


def _fernet_key(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


class EncryptedTransport(Transport):
    """``inner`` with every payload sealed on the way out and opened on the way in."""

    def __init__(self, inner: Transport, fernet: MultiFernet, events: TransportEvents) -> None:
        from cryptography.fernet import InvalidToken

        self._inner = inner
        self._fernet = fernet
        self._events = events
        self._invalid_token = InvalidToken

    def __repr__(self) -> str:  # the keys stay out of it
        return f"<EncryptedTransport {self._inner!r}>"

    @property
    def url(self) -> str:  # type: ignore[override]
        return self._inner.url

    @property
    def max_payload(self) -> int:  # type: ignore[override]
        # The largest plaintext whose token (base64: 4 bytes per 3) still fits the broker.
        return max(0, self._inner.max_payload // 4 * 3 - _FERNET_OVERHEAD)

    @property
    def pattern_subscriptions(self) -> bool:  # type: ignore[override]
        return self._inner.pattern_subscriptions

    def subject(self, *parts: str) -> str:
        return self._inner.subject(*parts)

    def wildcard(self, *parts: str) -> str:
        return self._inner.wildcard(*parts)

    async def connect(self) -> None:
        await self._inner.connect()

    async def close(self) -> None:
        await self._inner.close()

    def _open(self, payload: bytes, subject: str) -> bytes | None:
        try:
            return self._fernet.decrypt(payload)
        except self._invalid_token:
            self._events.dropped("undecryptable", subject)
            return None

    async def subscribe(self, subject: Subject, on_message: OnMessage) -> None:
        def opened(payload: bytes) -> None:
            plain = self._open(payload, subject.name)
            if plain is not None:
                on_message(plain)

        def opened_batch(data: bytes) -> None:
            # Each message of a positioned batch is sealed on its own (history keeps them one by
            # one); one that no key opens keeps its offset, empty, so that no hole appears.
            try:
                epoch, first, payloads = unpack_positioned(data)
            except ValueError:
                on_message(data)  # garbage: the core counts it
                return
            plain = [self._open(payload, subject.name) or b"" for payload in payloads]
            on_message(pack_positioned(epoch, first, plain))

        await self._inner.subscribe(subject, opened_batch if subject.history else opened)

    async def unsubscribe(self, subject: Subject) -> None:
        await self._inner.unsubscribe(subject)

    async def publish(self, subject: Subject, payload: bytes) -> None:
        await self._inner.publish(subject, self._fernet.encrypt(payload))

    async def publish_request(self, subject: Subject, payload: bytes, reply_to: str) -> int | None:
        return await self._inner.publish_request(subject, self._fernet.encrypt(payload), reply_to)

    async def queue_push(
        self, queue: Subject, payload: bytes, capacity: int, ttl: float, reply_to: str | None
    ) -> bool:
        sealed = self._fernet.encrypt(payload)
        return await self._inner.queue_push(queue, sealed, capacity, ttl, reply_to)

    async def queue_pop(self, queue: Subject, timeout: float, capacity: int) -> bytes | None:
        payload = await self._inner.queue_pop(queue, timeout, capacity)
        # An item no key opens is dropped like a timeout: the reader polls again.
        return None if payload is None else self._open(payload, queue.name)

    async def queue_flush(self, queues: Subject) -> None:
        await self._inner.queue_flush(queues)

    def registry(self) -> ProcessRegistry:
        return self._inner.registry()  # pids only: nothing to seal (they are in subjects too)

    @property
    def keeps_history(self) -> bool:  # type: ignore[override]
        return self._inner.keeps_history

    def history_append(
        self, subject: Subject, payloads: list[bytes], limits: HistoryLimits, epoch: str
    ) -> None:
        sealed = [self._fernet.encrypt(payload) for payload in payloads]
        self._inner.history_append(subject, sealed, limits, epoch)

    async def history_read(
        self, subject: Subject, since: int | None, limit: int | None, limits: HistoryLimits
    ) -> HistorySlice:
        found = await self._inner.history_read(subject, since, limit, limits)
        entries = [
            (offset, self._open(payload, subject.name) or b"") for offset, payload in found.entries
        ]
        return found._replace(entries=entries)
