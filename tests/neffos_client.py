"""A neffos client over Channels' WebsocketCommunicator, for consumer tests without a server."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from channels_neffos.namespaces.protocol import Message, parse


class Client:
    """One connection: ``request`` waits for the answer to a frame, ``emit`` does not."""

    def __init__(self, communicator: WebsocketCommunicator, connection_id: str) -> None:
        self.communicator = communicator
        self.id = connection_id
        self._wait = 0

    async def request(self, text: str) -> str:
        self._wait += 1
        await self.communicator.send_to(text_data=f"${self._wait};{text}")
        answer: str = await self.communicator.receive_from(timeout=5)
        return answer

    async def emit(self, text: str) -> None:
        await self.communicator.send_to(text_data=f";{text}")

    async def frame(self) -> Message:
        return parse(await self.communicator.receive_from(timeout=5))

    async def nothing(self) -> bool:
        return bool(await self.communicator.receive_nothing(timeout=0.2))
