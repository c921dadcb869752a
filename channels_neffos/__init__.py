"""Django Channels layers that scale out over Redis or NATS, neffos-style.

Use ``channels_neffos.RedisChannelLayer`` or ``channels_neffos.NatsChannelLayer`` as the
``BACKEND`` of a ``CHANNEL_LAYERS`` entry. See the README and ``docs/`` for options and semantics.
"""

# The release's one version number: pyproject.toml reads it from here, statically (a plain
# string literal, so building never imports the package); docs/releasing.rst says how to bump it.
__version__ = "0.1.0"

from ._core.history import GroupHistory
from .channel_layer import NeffosChannelLayer
from .exceptions import (
    AskError,
    AskTimeout,
    BrokerUnavailable,
    ChannelFull,
    ChannelsNeffosError,
    LayerClosed,
    MessageTooLarge,
    NoResponders,
    PermissionDenied,
    PresenceUnavailable,
)
from .layers import NatsChannelLayer, RedisChannelLayer
from .multi import MultiChannelLayer

__all__ = [
    "AskError",
    "AskTimeout",
    "BrokerUnavailable",
    "ChannelFull",
    "ChannelsNeffosError",
    "GroupHistory",
    "LayerClosed",
    "MessageTooLarge",
    "MultiChannelLayer",
    "NatsChannelLayer",
    "NeffosChannelLayer",
    "NoResponders",
    "PermissionDenied",
    "PresenceUnavailable",
    "RedisChannelLayer",
]
