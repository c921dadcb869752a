"""Django Channels layers that scale out over Redis or NATS, neffos-style.

Use ``channels_neffos.RedisChannelLayer`` or ``channels_neffos.NatsChannelLayer`` as the
``BACKEND`` of a ``CHANNEL_LAYERS`` entry. See the README and ``docs/`` for options and semantics.
"""

from .engine import NeffosChannelLayer
from .exceptions import (
    AskTimeout,
    BrokerUnavailable,
    ChannelFull,
    ChannelsNeffosError,
    MessageTooLarge,
    NoResponders,
)
from .layers import NatsChannelLayer, RedisChannelLayer

__all__ = [
    "AskTimeout",
    "BrokerUnavailable",
    "ChannelFull",
    "ChannelsNeffosError",
    "MessageTooLarge",
    "NatsChannelLayer",
    "NeffosChannelLayer",
    "NoResponders",
    "RedisChannelLayer",
]
