"""Every exception channels_neffos raises, in one place.

Each one says what went wrong *and* what to do about it. ``ChannelFull`` is Channels' own class,
re-exported so ``except ChannelFull`` works the same with every layer.
"""

from __future__ import annotations

from channels.exceptions import ChannelFull
from channels.exceptions import MessageTooLarge as ChannelsMessageTooLarge

__all__ = [
    "AskError",
    "AskTimeout",
    "BrokerUnavailable",
    "ChannelFull",
    "ChannelsNeffosError",
    "LayerClosed",
    "MessageTooLarge",
    "NoResponders",
    "PermissionDenied",
    "PresenceUnavailable",
]


class ChannelsNeffosError(Exception):
    """Base class for the errors this package defines (``ChannelFull`` aside)."""


_HEADLINES = {
    "unreachable": "cannot reach the broker at {url}",
    "authentication": "authentication failed with the broker at {url}",
    "TLS verification": "TLS verification failed with the broker at {url}",
    "permission": "permission denied by the broker at {url}",
    "presence": "presence is not available on the broker at {url}",
    "error": "the broker at {url} answered with an error",
}
#: What to check, for each cause a transport can name in :class:`BrokerUnavailable`.
_ADVICE = {
    "unreachable": "Check that the server is running and that the layer's CONFIG "
    "(hosts/servers) points at it.",
    "authentication": "Check the credentials in the layer's CONFIG (password, ACL user, token, "
    "NKey seed or creds file) against the broker's configuration.",
    "TLS verification": "Check the CA the layer trusts (ssl_ca_certs / tls context), the "
    "server certificate's host name, and the client certificate if the server requires one.",
    "presence": "Presence needs a registry of processes on the broker: on NATS, JetStream "
    "(nats-server -js) with the permissions in docs/security.rst.",
    "permission": "The broker refused an operation to this user: grant the permissions listed "
    "in docs/security.rst for the layer's prefix.",
    "error": "The broker refused the command for the reason above (for instance a key under "
    "the layer's prefix that another program uses with another type): give this application "
    "a prefix of its own.",
}


class BrokerUnavailable(ChannelsNeffosError, ConnectionError):
    """The broker could not be reached or refused us (at startup, or for an operation that needs
    an answer).

    ``cause`` names why, for code and for the message: ``"unreachable"`` (the default),
    ``"authentication"``, ``"TLS verification"``, ``"permission"``, ``"presence"`` or
    ``"error"`` (the broker answered a command with an error). The message never holds a
    secret: transports pass URLs with their passwords masked and reasons from the broker.
    """

    def __init__(self, url: str, reason: object, *, cause: str = "unreachable") -> None:
        self.url = url
        self.cause = cause
        headline = _HEADLINES.get(cause, _HEADLINES["unreachable"]).format(url=url)
        super().__init__(f"{headline}: {reason}. {_ADVICE.get(cause, _ADVICE['unreachable'])}")


class PermissionDenied(BrokerUnavailable, PermissionError):
    """The broker refused an operation to this user (a Redis ACL, NATS subject permissions)."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(url, reason, cause="permission")


class PresenceUnavailable(BrokerUnavailable):
    """The broker keeps no registry of live processes for this layer, which presence
    (``group_members``/``group_size``) needs — e.g. a NATS server without JetStream."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(url, reason, cause="presence")


class MessageTooLarge(ChannelsNeffosError, ChannelsMessageTooLarge, ValueError):  # type: ignore[misc]
    """The encoded message is larger than the broker accepts in one message (also Channels'
    ``channels.exceptions.MessageTooLarge``, the exception its spec names)."""

    def __init__(self, size: int, limit: int, broker: str) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message is {size} bytes once encoded, but {broker} accepts at most {limit} bytes. "
            f"Send a reference (a URL, a database id) instead of the data, or raise the "
            f"broker's limit (NATS: max_payload in the server config)."
        )


class NoResponders(ChannelsNeffosError, LookupError):
    """Nothing holds the target of a request: no process owns the channel, or the group is empty."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(
            f"no responders for {target!r}: no running process holds this channel or has "
            f"members in this group (has the consumer disconnected?)"
        )


class AskTimeout(ChannelsNeffosError, TimeoutError):
    """No reply arrived in time."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        super().__init__(
            f"no reply from {target!r} within {timeout:g}s: the receiver is slow, blocked or did "
            f"not reply; raise the timeout or check its handler"
        )


class AskError(ChannelsNeffosError):
    """The receiver of an ask answered with an error (``reply_error``, or its handler raised)."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


class LayerClosed(ChannelsNeffosError, RuntimeError):
    """``close()`` ended this event loop's connection while a ``receive()`` or an ask waited."""

    def __init__(self, waiting_for: str) -> None:
        self.waiting_for = waiting_for
        super().__init__(
            f"the channel layer was closed while waiting for {waiting_for!r}. Channels made "
            f"before close() are gone; if you keep using the layer, make new ones with "
            f"new_channel() (and join groups again)"
        )
