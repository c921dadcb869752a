"""Consumer mixins that answer asks: a handler's return value becomes the reply.

::

    class PriceConsumer(AskMixin, AsyncJsonWebsocketConsumer):
        async def price_quote(self, message):
            return {"price": await lookup(message["sku"])}

    # anywhere, in any process:
    reply = await channel_layer.ask(consumer_channel, {"type": "price.quote", "sku": "A1"})

For a message that is not an ask, handlers behave exactly as in Channels (the return value is
ignored). For an ask, a returned dict is sent back with ``layer.reply``; returning ``None`` sends
nothing (the handler may have replied itself); raising sends the exception's text to the asker as
``AskError`` and then propagates as usual.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async

try:  # Channels >= 4.2 closes stale DB connections before each handler
    from channels.db import aclose_old_connections
except ImportError:  # pragma: no cover - older Channels

    async def aclose_old_connections() -> None:
        return None


class AskMixin:
    """For ``AsyncConsumer`` subclasses (``AsyncWebsocketConsumer`` and friends)."""

    channel_layer: Any

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await aclose_old_connections()
        if not _is_ask(self.channel_layer, message):
            await handler(message)
            return
        try:
            result = await handler(message)
        except Exception as exc:
            await self.channel_layer.reply_error(message, str(exc) or type(exc).__name__)
            raise
        if result is not None:
            await self.channel_layer.reply(message, result)


class SyncAskMixin:
    """For ``SyncConsumer`` subclasses (``WebsocketConsumer`` and friends)."""

    channel_layer: Any

    @database_sync_to_async  # type: ignore[untyped-decorator]
    def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if not _is_ask(self.channel_layer, message):
            handler(message)
            return
        try:
            result = handler(message)
        except Exception as exc:
            async_to_sync(self.channel_layer.reply_error)(message, str(exc) or type(exc).__name__)
            raise
        if result is not None:
            async_to_sync(self.channel_layer.reply)(message, result)


def _is_ask(layer: Any, message: dict[str, Any]) -> bool:
    is_ask = getattr(layer, "is_ask", None)
    return bool(is_ask is not None and is_ask(message))
