"""NATS credentials for tests: NKeys, operator-mode JWTs, ``.creds`` files and config snippets.

Everything is generated on the spot, so tests need neither the ``nsc`` tool nor files checked
into the repository:

* :func:`new_nkey` — an operator, account or user key pair (``nkeys`` library).
* :class:`NatsOperator` — an operator with accounts and users, their JWTs signed here, and the
  server configuration of operator mode (``resolver: MEMORY`` with ``resolver_preload``).
* :func:`creds_text` — the ``.creds`` file nats-py reads (``user_credentials``): the user JWT
  and the user's NKey seed.
* :func:`jwt_permissions` — subject permissions in server-config form (as
  :func:`channels_neffos.security.nats_permissions` returns them) in user-JWT form.

:class:`~channels_neffos.testing.brokers.NatsServer` takes the results (``users=``, ``token=``,
``operator=``).

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` without padding; the
header is ``{"typ":"JWT","alg":"ed25519-nkey"}``, the signature an Ed25519 signature of the first
two parts by the issuer's NKey. Claims hold ``jti`` (an id: base32 of a hash of the claims),
``iat``, ``iss`` (the signer's public key), ``sub`` (the subject's public key), ``name``,
optionally ``exp``, and a ``nats`` object with the ``type`` (operator, account or user) and
``version: 2``. NATS configuration is a superset of JSON, so snippets are written as JSON.

Requires the ``nkeys`` package (in the ``test`` extra).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys

_PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
#: "No limit" for every account and user limit (a missing limit would mean zero).
_NO_LIMITS = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class NKey:
    """One NKey pair: ``seed`` (secret, ``S…``) and ``public`` (``O…``, ``A…`` or ``U…``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        key_pair = nkeys.from_seed(bytearray(self.seed.encode()))
        signature: bytes = key_pair.sign(data)
        return signature


def new_nkey(kind: str) -> NKey:
    """A fresh key pair of ``kind``: ``"operator"``, ``"account"`` or ``"user"``."""
    if kind not in _PREFIXES:
        raise ValueError(f"kind must be one of {sorted(_PREFIXES)}, got {kind!r}")
    seed = nkeys.encode_seed(os.urandom(32), _PREFIXES[kind])
    public = nkeys.from_seed(bytearray(seed)).public_key
    return NKey(seed=seed.decode(), public=public.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(claims: dict[str, Any], signer: NKey) -> str:
    """Sign ``claims`` (``iss`` is set to the signer, ``iat`` and ``jti`` are added)."""
    claims = {**claims, "iss": signer.public, "iat": int(time.time())}
    claims.pop("jti", None)
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = f"{_b64(json.dumps(_JWT_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(signer.sign(signed.encode()))}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """The ``.creds`` file for a user: its JWT and its NKey seed, as ``nsc`` writes them."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def jwt_permissions(permissions: dict[str, Any]) -> dict[str, Any]:
    """Server-config permissions (``publish``/``subscribe``) in user-JWT form (``pub``/``sub``)."""
    renamed = {"publish": "pub", "subscribe": "sub"}
    return {renamed.get(key, key): value for key, value in permissions.items()}


@dataclass
class NatsAccount:
    """An account of a :class:`NatsOperator`: its key and JWT, signed by the operator."""

    name: str
    key: NKey
    jwt: str


@dataclass
class NatsOperator:
    """An operator, its accounts and users: the server config and ``.creds`` files for them.

    ``server_config()`` lists every account added with :meth:`add_account`; a user of an
    account created with ``preload=False`` (or of another operator) is unknown to the server.
    """

    name: str = "test-operator"
    key: NKey = field(default_factory=lambda: new_nkey("operator"))
    accounts: list[NatsAccount] = field(default_factory=list)

    @property
    def jwt(self) -> str:
        claims = {
            "sub": self.key.public,
            "name": self.name,
            "nats": {"type": "operator", "version": 2},
        }
        return encode_jwt(claims, self.key)

    def add_account(self, name: str, *, preload: bool = True) -> NatsAccount:
        key = new_nkey("account")
        limits = {**_NO_LIMITS, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
        claims = {
            "sub": key.public,
            "name": name,
            "nats": {"limits": {**limits, "leaf": -1}, "type": "account", "version": 2},
        }
        account = NatsAccount(name, key, encode_jwt(claims, self.key))
        if preload:
            self.accounts.append(account)
        return account

    def user_creds(
        self,
        account: NatsAccount,
        name: str,
        *,
        permissions: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> tuple[str, NKey]:
        """A user of ``account``: the text of its ``.creds`` file, and its key.

        ``permissions`` in server-config form (``{"publish": {"allow": [...]}, ...}``);
        ``expires_at`` (Unix time) makes the JWT expire then.
        """
        key = new_nkey("user")
        user: dict[str, Any] = {**_NO_LIMITS, "type": "user", "version": 2}
        user.update(jwt_permissions(permissions or {}))
        claims: dict[str, Any] = {"sub": key.public, "name": name, "nats": user}
        if expires_at is not None:
            claims["exp"] = int(expires_at)
        return creds_text(encode_jwt(claims, account.key), key.seed), key

    def server_config(self) -> str:
        """``operator``, ``resolver: MEMORY`` and every preloaded account's JWT."""
        preload = {account.key.public: account.jwt for account in self.accounts}
        return (
            f"operator: {json.dumps(self.jwt)}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {json.dumps(preload)}\n"
        )


def write_creds(path: Path, text: str) -> Path:
    """Write a ``.creds`` file readable by its owner only, as ``nsc`` does."""
    path.write_text(text)
    path.chmod(0o600)
    return path
