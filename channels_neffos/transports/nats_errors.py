"""How the NATS transport tells refusals apart and keeps secrets out of what it shows.

The one place NATS errors are classified (:func:`error_cause`) into the ``cause`` of
:class:`~channels_neffos.exceptions.BrokerUnavailable`, and where the secrets a layer's
configuration holds in clear are found (:func:`secrets_of`) so that text from nats-py can be
masked (:func:`mask`) before it reaches an exception or a log line.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import nats.errors

#: nats-py's text (lowercased by its parser) for the server's ``-ERR`` refusing a credential.
AUTHENTICATION_ERRORS = (
    "authorization violation",
    "authentication timeout",
    "authentication expired",
    "authentication revoked",
    "account authentication expired",
)
#: The server's ``-ERR`` for a subject the user may not use, as nats-py reports it (lowercased).
VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')
#: An encoded NKey seed (operator, account or user), wherever one might show up in a text.
SEED = re.compile(r"S[OAU][A-Z2-7]{50,}")


def mask(text: str, secrets: list[str]) -> str:
    """``text`` without ``secrets`` (from :func:`secrets_of`) or any NKey seed."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return SEED.sub("S***", text)


def error_cause(exc: BaseException, server_info: dict[str, Any] | None = None) -> str:
    """The :class:`BrokerUnavailable` ``cause`` of an error from nats-py or its TLS connection.

    The one place NATS errors are classified: ``"authentication"`` (the server refused the
    credentials, or nats-py could not read them: a bad seed, a missing creds file),
    ``"TLS verification"`` (our check of the server's certificate, or the server's of ours),
    ``"permission"`` (a subject the user may not use), else ``"unreachable"``. Follows
    ``__cause__``/``__context__``, since nats-py wraps some errors.

    ``server_info``: the INFO the server sent on this connection attempt. A server that
    verifies client certificates (``tls_verify``) rejects ours after the TLS 1.3 handshake
    has completed on our side, so nats-py often sees only the connection closing (a broken
    pipe while it writes CONNECT) instead of the server's alert: that is a TLS refusal too.
    """
    if (
        server_info
        and server_info.get("tls_verify")
        and isinstance(exc, (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError))
    ):
        return "TLS verification"
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        # Plain SSLError: an alert from the server (unknown CA, certificate required); its
        # subclasses (EOF, zero return) are a connection closing, not a verdict.
        if isinstance(error, ssl.SSLCertVerificationError) or type(error) is ssl.SSLError:
            return "TLS verification"
        if isinstance(error, nats.errors.AuthorizationError):
            return "authentication"
        if type(error).__module__.partition(".")[0] == "nkeys":  # nats-py's NKey library
            return "authentication"
        if isinstance(error, OSError) and error.filename is not None:  # a creds/seed file
            return "authentication"
        text = str(error).lower()
        if any(marker in text for marker in AUTHENTICATION_ERRORS):
            return "authentication"
        if "permissions violation" in text:
            return "permission"
        error = error.__cause__ or error.__context__
    return "unreachable"


def failure_of(
    connecting: asyncio.Future[None],
    refused: asyncio.Future[BaseException],
    last_error: BaseException | None,
    startup_timeout: float,
) -> BaseException | None:
    """Why a first connect failed (``None`` if it succeeded): the refusal that stopped it, else
    the last error nats-py saw (more telling than its final "no servers available")."""
    if connecting.done() and not connecting.cancelled():
        failure = connecting.exception()
        if failure is None:
            return None
        if error_cause(failure) != "unreachable":  # e.g. an unreadable NKey seed
            return failure
    if refused.done():
        return refused.result()
    if not connecting.done() or connecting.cancelled():
        return last_error or asyncio.TimeoutError(f"no answer within {startup_timeout:g} s")
    return last_error or failure


def secrets_of(servers: list[str], connect_options: dict[str, Any]) -> list[str]:
    """The secrets a layer's configuration holds in clear: URL passwords and tokens, and the
    ``password``, ``token`` and ``nkeys_seed_str`` options (files are nats-py's to read)."""
    found: list[str] = []
    for server in servers:
        parts = urlsplit(server)
        secret = parts.password if parts.password is not None else parts.username  # or a token
        if secret:
            found += [secret, unquote(secret)]
    for option in ("password", "token", "nkeys_seed_str"):
        value = connect_options.get(option)
        if isinstance(value, str):
            found.append(value.strip())
    # Longest first, so a secret containing another is masked whole; very short ones would
    # garble messages and protect little (a user name in a URL is shown anyway).
    return sorted({secret for secret in found if len(secret) >= 4}, key=len, reverse=True)
