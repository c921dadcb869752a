"""Recovery in history rooms at the frame level (see channels_neffos/namespaces/recovery.py), on
Redis and NATS: positions for clients that ask, the rejoin's replay-then-live switch under
concurrent broadcasts, the cap, and plain clients left byte-for-byte as they were."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_neffos.namespaces import Namespace, NeffosConsumer, history_rooms
from channels_neffos.namespaces import server as neffos_server
from channels_neffos.namespaces.groups import namespace_group, room_group
from channels_neffos.namespaces.protocol import Message, parse, serialize
from channels_neffos.namespaces.recovery import REPLAYED, RESUME
from channels_neffos.testing.conformance import LayerSpec, eventually
from tests.neffos_client import Client


class Room(Namespace):
    name = "room"


class Consumer(NeffosConsumer):
    namespaces = [Room]


class SmallCap(NeffosConsumer):
    namespaces = [Room]
    max_recovery_messages = 5


@pytest.fixture(params=["redis", "nats"])
def spec(request: pytest.FixtureRequest) -> Iterator[LayerSpec]:
    """Each layer, with history for the rooms of namespace "room"."""
    base: LayerSpec = request.getfixturevalue(f"{request.param}_spec")
    config = {**base.config, "history": history_rooms("room", size=1000, ttl=60)}
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": base.backend, "CONFIG": config}}):
        yield LayerSpec(base.backend, config)


@pytest_asyncio.fixture
async def layer(spec: LayerSpec) -> AsyncIterator[Any]:
    from channels.layers import get_channel_layer

    found = get_channel_layer()
    yield found
    await found.close()


async def connect(consumer: type[NeffosConsumer] = Consumer) -> Client:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="M")
    ack = await communicator.receive_from()
    client = Client(communicator, ack[1:])
    assert await client.request("room;;_OnNamespaceConnect;0;0;") == "$1;;;;;;"
    return client


async def opt_in(client: Client, rooms: dict[str, Any] | None = None, was: str = "") -> None:
    await client.emit(f"room;;{RESUME};0;0;{json.dumps({'rooms': rooms or {}, 'was': was})}")


async def send(count: int, start: int = 1, exclude: str | None = None) -> None:
    for number in range(start, start + count):
        await neffos_server.broadcast("room", "chat", str(number), room="r", exclude=exclude)


_TOKEN = re.compile(r"~(\w+)\.(\d+)(!?);")


def position(raw: str) -> tuple[str, int, bool] | None:
    found = _TOKEN.match(raw)
    return (found[1], int(found[2]), bool(found[3])) if found else None


async def frames_until(client: Client, done: Any, limit: float = 10) -> list[str]:
    """Raw frames until ``done(frames)``."""
    frames: list[str] = []
    async with asyncio.timeout(limit):
        while not done(frames):
            frames.append(await client.communicator.receive_from(timeout=limit))
    return frames


async def appended(layer: Any, offset: int) -> None:
    """Until the room's history holds ``offset`` (appends are acknowledged asynchronously)."""

    async def holds() -> bool:
        return bool((await layer.group_history(room_group("room", "r"), limit=1)).offset >= offset)

    await eventually(holds, 10, f"the history holding offset {offset}")


def replayed(raw: str) -> dict[str, Any] | None:
    message = parse(raw)
    return json.loads(message.text) if message.event == REPLAYED else None


@pytest.mark.asyncio
async def test_a_plain_client_gets_the_frames_it_always_got(layer: Any) -> None:
    assert layer.has_history(room_group("room", "r"))
    client = await connect()
    assert await client.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    await send(1)
    raw = await client.communicator.receive_from(timeout=5)
    assert raw == serialize(Message("room", "r", "chat", "1"))  # no position, nothing added
    assert await client.nothing()
    await client.communicator.disconnect()


@pytest.mark.asyncio
async def test_a_rejoin_replays_what_was_missed_then_goes_live_with_no_gap_or_duplicate(
    layer: Any,
) -> None:
    first = await connect()
    await opt_in(first)
    assert await first.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    start = replayed(await first.communicator.receive_from(timeout=5))
    assert start is not None and start["recovered"] and start["replayed"] == 0
    # A plain member keeps this process in the room's group all along, so live broadcasts reach
    # the second client the moment it is a member — while its replay is still being read.
    watcher = await connect()
    assert await watcher.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    # 1-40 reach the first client; 41-90 are sent while it is away; 91-300 flow while the second
    # client rejoins with the first's position, so the replay and the live frames overlap.
    await send(40)
    got = await frames_until(first, lambda frames: len(frames) >= 40)
    await first.communicator.disconnect()
    await send(50, 41)
    last = position(got[-1])
    assert last is not None
    await appended(layer, last[1] + 50)  # in history before the rejoin (NATS acks later)
    second = await connect()
    await opt_in(second, {"r": {"epoch": last[0], "offset": last[1]}}, was=first.id)
    sender = asyncio.ensure_future(_steady(91, 300))
    await second.communicator.send_to(text_data="$2;room;r;_OnRoomJoin;0;0;")
    rest = await frames_until(second, lambda frames: frames and parse(frames[-1]).text == "300")
    await sender
    assert rest[0] == "$2;;;;;;"  # the join's answer first
    markers = [index for index, raw in enumerate(rest) if replayed(raw) is not None]
    assert len(markers) == 1
    outcome = replayed(rest[markers[0]])
    assert outcome is not None and outcome["recovered"] and outcome["epoch"] == last[0]
    replay, live = rest[1 : markers[0]], rest[markers[0] + 1 :]
    assert outcome["replayed"] == len(replay) and len(replay) >= 50
    offsets = [position(raw) for raw in got + replay + live]
    assert all(found is not None and not found[2] for found in offsets)
    numbers = [int(parse(raw[raw.index(";") :]).text) for raw in got + replay + live]
    assert numbers == list(range(1, 301))  # every broadcast once, in order
    sequence = [found[1] for found in offsets if found is not None]
    assert sequence == list(range(sequence[0], sequence[0] + 300))  # offsets with no hole
    assert all(found[1] <= outcome["offset"] for found in map(position, replay) if found)
    assert all(found[1] > outcome["offset"] for found in map(position, live) if found)
    await second.communicator.disconnect()
    await watcher.communicator.disconnect()


async def _steady(first: int, last: int) -> None:
    for number in range(first, last + 1):
        await send(1, number)
        if number % 10 == 0:
            await asyncio.sleep(0.005)  # let the clients' frames interleave with the sends


@pytest.mark.asyncio
async def test_more_missed_than_the_cap_is_not_recovered_and_nothing_is_replayed(
    layer: Any,
) -> None:
    first = await connect(SmallCap)
    await opt_in(first)
    assert await first.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    start = replayed(await first.communicator.receive_from(timeout=5))
    assert start is not None
    await first.communicator.disconnect()
    await send(20)
    await appended(layer, start["offset"] + 20)
    second = await connect(SmallCap)
    since = {"epoch": start["epoch"], "offset": start["offset"]}
    await opt_in(second, {"r": since})
    assert await second.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    outcome = replayed(await second.communicator.receive_from(timeout=5))
    epoch = (await layer.group_history(room_group("room", "r"), limit=1)).epoch
    assert outcome == {
        "epoch": epoch,
        "offset": since["offset"] + 20,
        "recovered": False,
        "replayed": 0,
        "reason": "too_many",
    }
    await send(1, 21)
    live = await second.communicator.receive_from(timeout=5)
    assert position(live) == (epoch, since["offset"] + 21, False)
    await second.communicator.disconnect()


@pytest.mark.asyncio
async def test_a_position_of_another_epoch_is_not_recovered(layer: Any) -> None:
    await send(3)
    client = await connect()
    await opt_in(client, {"r": {"epoch": "not-this-one", "offset": 2}})
    assert await client.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    outcome = replayed(await client.communicator.receive_from(timeout=5))
    assert outcome is not None
    assert (outcome["recovered"], outcome["reason"], outcome["replayed"]) == (False, "epoch", 0)
    assert await client.nothing()
    await client.communicator.disconnect()


@pytest.mark.asyncio
async def test_what_the_client_sent_itself_before_is_not_replayed_to_it(layer: Any) -> None:
    first = await connect()
    await opt_in(first)
    assert await first.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    start = replayed(await first.communicator.receive_from(timeout=5))
    assert start is not None
    await first.communicator.disconnect()
    await send(2, 1, exclude=first.id)  # its own two messages (sent as it left)
    await send(1, 3)
    await appended(layer, start["offset"] + 3)
    second = await connect()
    since = {"epoch": start["epoch"], "offset": start["offset"]}
    await opt_in(second, {"r": since}, was=first.id)
    assert await second.request("room;r;_OnRoomJoin;0;0;") == "$2;;;;;;"
    raw = await second.communicator.receive_from(timeout=5)
    assert parse(raw[raw.index(";") :]).text == "3"
    outcome = replayed(await second.communicator.receive_from(timeout=5))
    assert outcome is not None and outcome["recovered"] and outcome["replayed"] == 1
    await second.communicator.disconnect()


@pytest.mark.asyncio
async def test_a_malformed_resume_is_answered_with_an_error(layer: Any) -> None:
    client = await connect()
    answer = await client.request(f"room;;{RESUME};0;0;{{not json")
    assert parse(answer).is_error and RESUME in parse(answer).text
    answer = await client.request(f'room;;{RESUME};0;0;{{"rooms": {{"r": {{"offset": -1}}}}}}')
    assert parse(answer).is_error and "no valid position" in parse(answer).text
    answer = await client.request(
        f'room;;{RESUME};0;0;{{"rooms": {{"r": {{"epoch": null, "offset": 3}}}}}}'
    )
    assert parse(answer).is_error and "no valid position" in parse(answer).text
    await client.communicator.disconnect()


def test_history_rooms_writes_rules_that_match_the_rooms_groups() -> None:
    from channels_neffos._core.history import compile_history, history_for

    rules = compile_history(
        {
            **history_rooms("chat", "small-*", size=10, ttl=60),
            **history_rooms("chat", "a.b", size=5, ttl=60),
            **history_rooms("chat", size=100, ttl=600, meta_ttl=900),
        }
    )
    small, dotted, rest = (
        history_for(rules, room_group("chat", r)) for r in ("small-1", "a.b", "x")
    )
    assert (small and small.size, dotted and dotted.size, rest and rest.size) == (10, 5, 100)
    assert history_for(rules, room_group("other", "x")) is None
    assert history_for(rules, namespace_group("chat")) is None  # the namespace itself: no
    with pytest.raises(ValueError, match="list the rooms by name"):
        history_rooms("chat.v2", size=1, ttl=1)


@pytest.mark.asyncio
async def test_what_the_replay_covered_is_not_written_again_if_it_reaches_the_hub_late() -> None:
    """The hub's own order may deliver messages after a member's replay already gave them (it
    was filling a hole from history meanwhile): they are not written twice."""
    from channels_neffos.envelope import POSITION_KEY
    from channels_neffos.namespaces.hub import Hub, Member
    from channels_neffos.namespaces.outgoing import Outgoing
    from channels_neffos.namespaces.server import FRAME_TYPE

    written: list[str] = []

    async def asgi_send(message: dict[str, Any]) -> None:
        written.append(message["text"])

    member = Member(Outgoing(asgi_send, "c", max_frames=100, max_bytes=1 << 20), {})
    member.positions = True
    hub = Hub(layer=None)
    scope = ("room", "r")
    hub.members[scope] = {"c": member}

    def arrives(offset: int) -> None:
        frame = serialize(Message("room", "r", "chat", str(offset)))
        position = {"epoch": "e", "offset": offset}
        hub._fan_out(
            {
                "type": FRAME_TYPE,
                "namespace": "room",
                "room": "r",
                "frame": frame,
                "exclude": None,
                POSITION_KEY: position,
            }
        )

    member.hold(scope)
    arrives(3)  # held, then dropped: the replay covers it
    member.release(scope, "e", 10)  # the replay covered 1-10
    for offset in range(5, 13):  # 5-10 come late, then 11 and 12
        arrives(offset)
    await eventually(lambda: len(written) >= 2, 5, "the frames past the replay")
    await asyncio.sleep(0.05)
    assert [parse(raw[raw.index(";") :]).text for raw in written] == ["11", "12"]
    assert written[0].startswith("~e.11;")
    await member.outgoing.discard()


@pytest.mark.asyncio
async def test_a_draining_instance_refuses_a_handshake_without_making_anything(
    layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a drain a new connection is answered 403 and its application ends at once: no
    channel, no task waiting on the layer that the drain is about to close (one that waited
    raised LayerClosed into the server's log)."""
    from channels_neffos.namespaces.drain import drain

    monkeypatch.setattr(drain, "draining", True)
    communicator = WebsocketCommunicator(Consumer.as_asgi(), "/ws")
    connected, _ = await communicator.connect()
    assert not connected  # closed before accept: the server answers the handshake 403
    # The application is done by itself: nothing left running (wait() would cancel it).
    await asyncio.wait_for(asyncio.shield(communicator.future), 1)
    assert not drain.connections


@pytest.mark.asyncio
async def test_handshakes_beyond_the_accept_rate_are_refused_and_counted(layer: Any) -> None:
    from channels_neffos.namespaces import counters
    from channels_neffos.namespaces.admission import admission

    before = counters["refused_busy"]
    with override_settings(NEFFOS_ACCEPT_RATE=2):
        admission._filled_at = None  # a full bucket: two at once, then two a second
        outcomes = []
        for _ in range(3):
            communicator = WebsocketCommunicator(Consumer.as_asgi(), "/ws")
            connected, _ = await communicator.connect()
            outcomes.append(connected)
            if connected:
                await communicator.disconnect()
    assert outcomes == [True, True, False]
    assert counters["refused_busy"] - before == 1
    client = await connect()  # no limit again
    await client.communicator.disconnect()
