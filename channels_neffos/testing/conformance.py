"""A reusable conformance suite for channel layers, run on real brokers.

Subclass :class:`ChannelLayerConformance` and provide a ``layer_spec`` fixture returning a
:class:`LayerSpec`; every call to ``make_layer()`` then builds a *separate* layer instance on the
same broker and prefix — to the layer, a separate process. Cases that need a real broker (two
instances, OS processes, broker-side errors) are in the base class too; a subclass for a layer
where a case does not apply (e.g. Channels' ``InMemoryChannelLayer``) switches it off by setting
the test attribute to ``None``, so the run reports no skips.

Example::

    class TestMyLayer(ChannelLayerConformance):
        @pytest.fixture
        def layer_spec(self, redis_server):
            return LayerSpec("channels_neffos.RedisChannelLayer",
                             {"hosts": [redis_server.url], "prefix": unique_prefix()})
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from django.utils.module_loading import import_string

RECEIVE_TIMEOUT = 5.0


def unique_prefix() -> str:
    return "t" + secrets.token_hex(6)


@dataclass(frozen=True)
class LayerSpec:
    """How to build the layer under test: a ``BACKEND`` path and its ``CONFIG``."""

    backend: str
    config: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Any:
        return import_string(self.backend)(**{**self.config, **overrides})

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "config": self.config})


async def receive_within(layer: Any, channel: str, timeout: float = RECEIVE_TIMEOUT) -> Any:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def assert_nothing_arrives(layer: Any, channel: str, wait: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), wait)


async def run_child(spec: LayerSpec, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "channels_neffos.testing._child",
        spec.to_json(),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


BAD_CHANNEL_NAMES = [
    "",
    "spaces are bad",
    "tab\tchannel",
    "x" * 100,
    "über-ascii",
    "two!bangs!",
    "colon:channel",
    "star*",
    b"bytes-name",
    None,
    42,
]
BAD_GROUP_NAMES = ["", "has space", "bang!", "x" * 100, "ümlaut", None, b"bytes"]


class ChannelLayerConformance:
    """The behaviour every channels_neffos layer guarantees; see the module docstring."""

    @pytest.fixture
    def layer_spec(self) -> LayerSpec:
        raise NotImplementedError("subclasses provide a layer_spec fixture")

    @pytest.fixture
    def make_layer(self, layer_spec: LayerSpec) -> Callable[..., Any]:
        return layer_spec.build

    @pytest.fixture
    def layer(self, make_layer: Callable[..., Any]) -> Any:
        return make_layer()

    # -- send / receive ------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_send_receive_process_channel(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "test.message", "text": "hello"})
        assert await receive_within(layer, channel) == {"type": "test.message", "text": "hello"}

    @pytest.mark.asyncio
    async def test_send_receive_worker_channel(self, layer: Any) -> None:
        channel = "worker-" + secrets.token_hex(4)
        receiving = asyncio.ensure_future(receive_within(layer, channel))
        await asyncio.sleep(0.1)  # NATS keeps nothing for a worker channel nobody reads yet
        await layer.send(channel, {"type": "task", "n": 1})
        assert await receiving == {"type": "task", "n": 1}

    @pytest.mark.asyncio
    async def test_fifo_process_channel(self, layer: Any) -> None:
        channel = await layer.new_channel()
        for n in range(50):
            await layer.send(channel, {"type": "n", "n": n})
        assert [(await receive_within(layer, channel))["n"] for _ in range(50)] == list(range(50))

    @pytest.mark.asyncio
    async def test_fifo_from_another_instance(self, make_layer: Callable[..., Any]) -> None:
        receiver, sender = make_layer(), make_layer()
        channel = await receiver.new_channel()
        for n in range(100):
            await sender.send(channel, {"type": "n", "n": n})
        got = [(await receive_within(receiver, channel))["n"] for _ in range(100)]
        assert got == list(range(100))

    @pytest.mark.asyncio
    async def test_fifo_worker_channel(self, make_layer: Callable[..., Any]) -> None:
        receiver, sender = make_layer(), make_layer()
        channel = "fifo-" + secrets.token_hex(4)
        first = asyncio.ensure_future(receive_within(receiver, channel))
        await asyncio.sleep(0.1)
        for n in range(30):
            await sender.send(channel, {"type": "n", "n": n})
        got = [(await first)["n"]]
        got += [(await receive_within(receiver, channel))["n"] for _ in range(29)]
        assert got == list(range(30))

    @pytest.mark.asyncio
    async def test_new_channel_names_are_unique_and_valid(self, layer: Any) -> None:
        names = {await layer.new_channel() for _ in range(100)}
        assert len(names) == 100
        for name in names:
            assert "!" in name
            layer.require_valid_channel_name(name)

    @pytest.mark.asyncio
    async def test_new_channel_custom_prefix(self, layer: Any) -> None:
        channel = await layer.new_channel("daphne.response")
        assert channel.startswith("daphne.response.")
        await layer.send(channel, {"type": "x"})
        assert (await receive_within(layer, channel))["type"] == "x"

    @pytest.mark.asyncio
    async def test_received_messages_are_private_copies(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer()
        group = "copies-" + secrets.token_hex(4)
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, first)
        await layer.group_add(group, second)
        original = {"type": "x", "items": [1, 2]}
        await layer.group_send(group, original)
        one = await receive_within(layer, first)
        one["items"].append(3)
        assert (await receive_within(layer, second))["items"] == [1, 2]
        assert original == {"type": "x", "items": [1, 2]}

    @pytest.mark.asyncio
    async def test_two_instances_exchange_process_channel_messages(
        self, make_layer: Callable[..., Any]
    ) -> None:
        a, b = make_layer(), make_layer()
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await a.send(channel_b, {"type": "ping", "reply": channel_a})
        request = await receive_within(b, channel_b)
        await b.send(request["reply"], {"type": "pong"})
        assert (await receive_within(a, channel_a))["type"] == "pong"

    @pytest.mark.asyncio
    async def test_worker_channel_two_readers_each_message_once(
        self, make_layer: Callable[..., Any]
    ) -> None:
        readers, sender = [make_layer(), make_layer()], make_layer()
        channel = "jobs-" + secrets.token_hex(4)
        received: list[tuple[int, int]] = []
        stop = asyncio.Event()

        async def read(index: int, reader: Any) -> None:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(reader.receive(channel), 0.5)
                except asyncio.TimeoutError:
                    continue
                received.append((index, message["n"]))

        tasks = [asyncio.ensure_future(read(i, r)) for i, r in enumerate(readers)]
        await asyncio.sleep(0.3)
        for n in range(60):
            await sender.send(channel, {"type": "job", "n": n})
        for _ in range(100):
            if len(received) >= 60:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # would reveal duplicates
        stop.set()
        await asyncio.gather(*tasks)
        assert sorted(n for _, n in received) == list(range(60))

    @pytest.mark.asyncio
    async def test_concurrent_receivers_on_one_channel_each_get_one(self, layer: Any) -> None:
        channel = await layer.new_channel()
        receivers = [asyncio.ensure_future(receive_within(layer, channel)) for _ in range(2)]
        await asyncio.sleep(0.05)
        await layer.send(channel, {"type": "x", "n": 1})
        await layer.send(channel, {"type": "x", "n": 2})
        results = await asyncio.gather(*receivers)
        assert sorted(r["n"] for r in results) == [1, 2]

    @pytest.mark.asyncio
    async def test_receive_on_empty_channel_times_out(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await assert_nothing_arrives(layer, channel, wait=0.2)

    # -- groups --------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_group_send(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, one)
        await layer.group_add(group, two)
        await layer.group_send(group, {"type": "hello"})
        assert (await receive_within(layer, one))["type"] == "hello"
        assert (await receive_within(layer, two))["type"] == "hello"

    @pytest.mark.asyncio
    async def test_group_add_twice_delivers_once(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "once"})
        assert (await receive_within(layer, channel))["type"] == "once"
        await assert_nothing_arrives(layer, channel)

    @pytest.mark.asyncio
    async def test_group_discard_before_add_is_harmless(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_discard(group, channel)
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "x"})
        assert (await receive_within(layer, channel))["type"] == "x"

    @pytest.mark.asyncio
    async def test_group_discard_then_nothing_arrives(self, make_layer: Callable[..., Any]) -> None:
        member, sender = make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel = await member.new_channel()
        await member.group_add(group, channel)
        await member.group_discard(group, channel)
        await member.group_send(group, {"type": "local"})
        await sender.group_send(group, {"type": "remote"})
        await assert_nothing_arrives(member, channel, wait=0.5)

    @pytest.mark.asyncio
    async def test_group_send_to_empty_group_is_harmless(self, layer: Any) -> None:
        await layer.group_send("nobody-" + secrets.token_hex(4), {"type": "x"})

    @pytest.mark.asyncio
    async def test_group_send_reaches_members_in_two_instances(
        self, make_layer: Callable[..., Any]
    ) -> None:
        a, b, sender = make_layer(), make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel_a, channel_b = await a.new_channel(), await b.new_channel()
        await a.group_add(group, channel_a)
        await b.group_add(group, channel_b)
        await a.group_send(group, {"type": "from-a"})
        await sender.group_send(group, {"type": "from-sender"})
        for layer, channel in ((a, channel_a), (b, channel_b)):
            types = [(await receive_within(layer, channel))["type"] for _ in range(2)]
            assert sorted(types) == ["from-a", "from-sender"]
            await assert_nothing_arrives(layer, channel, wait=0.2)

    @pytest.mark.asyncio
    async def test_group_add_of_a_channel_in_another_instance(
        self, make_layer: Callable[..., Any]
    ) -> None:
        owner, other = make_layer(), make_layer()
        group = "g-" + secrets.token_hex(4)
        channel = await owner.new_channel()
        await other.group_add(group, channel)
        await other.group_send(group, {"type": "joined-remotely"})
        assert (await receive_within(owner, channel))["type"] == "joined-remotely"
        await other.group_discard(group, channel)
        await other.group_send(group, {"type": "after-discard"})
        await assert_nothing_arrives(owner, channel)

    @pytest.mark.asyncio
    async def test_group_send_reaches_member_in_another_os_process(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        group = "g-" + secrets.token_hex(4)
        report = await layer.new_channel()
        child = await run_child(layer_spec, "member", group, report)
        try:
            ready = await receive_within(layer, report, timeout=20)
            assert ready["type"] == "ready"
            await layer.group_send(group, {"type": "across", "payload": [1, "two"]})
            forwarded = await receive_within(layer, report)
            assert forwarded["message"] == {"type": "across", "payload": [1, "two"]}
        finally:
            _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()

    @pytest.mark.asyncio
    async def test_group_send_from_another_os_process(
        self, layer: Any, layer_spec: LayerSpec
    ) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        child = await run_child(layer_spec, "group_send", group, '{"type": "from-child"}')
        _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()
        assert (await receive_within(layer, channel))["type"] == "from-child"

    @pytest.mark.asyncio
    async def test_send_from_another_os_process(self, layer: Any, layer_spec: LayerSpec) -> None:
        channel = await layer.new_channel()
        child = await run_child(layer_spec, "send", channel, '{"type": "direct", "n": 7}')
        _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0, stderr.decode()
        assert await receive_within(layer, channel) == {"type": "direct", "n": 7}

    # -- flush and close -----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_flush_drops_waiting_messages(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "old"})
        await layer.flush()
        await layer.send(channel, {"type": "new"})
        assert (await receive_within(layer, channel))["type"] == "new"

    @pytest.mark.asyncio
    async def test_flush_forgets_groups(self, layer: Any) -> None:
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.flush()
        await layer.group_send(group, {"type": "x"})
        await assert_nothing_arrives(layer, channel)

    @pytest.mark.asyncio
    async def test_flush_drops_stored_worker_messages(self, make_layer: Callable[..., Any]) -> None:
        sender, reader = make_layer(), make_layer()
        channel = "flush-" + secrets.token_hex(4)
        await assert_nothing_arrives(reader, channel, wait=0.2)  # NATS: now subscribed
        await sender.send(channel, {"type": "old"})
        await asyncio.sleep(0.1)
        await reader.flush()
        await sender.flush()
        await assert_nothing_arrives(reader, channel, wait=0.3)

    @pytest.mark.asyncio
    async def test_close_then_use_again(self, layer: Any) -> None:
        channel = await layer.new_channel()
        await layer.close()
        await layer.close()  # idempotent
        again = await layer.new_channel()
        await layer.send(again, {"type": "x"})
        assert (await receive_within(layer, again))["type"] == "x"
        assert channel != again

    # -- capacity and expiry -------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_capacity_raises_channel_full_on_own_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=3)
        channel = await layer.new_channel()
        for _ in range(3):
            await layer.send(channel, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "x"})
        await receive_within(layer, channel)
        await layer.send(channel, {"type": "room again"})

    @pytest.mark.asyncio
    async def test_capacity_raises_channel_full_on_worker_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=2)
        channel = "full-" + secrets.token_hex(4)
        await layer.send(channel, {"type": "x"})
        await layer.send(channel, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "x"})

    @pytest.mark.asyncio
    async def test_channel_capacity_globs(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(capacity=100, channel_capacity={"tiny.*": 1})
        tiny = await layer.new_channel("tiny")
        roomy = await layer.new_channel("roomy")
        await layer.send(tiny, {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send(tiny, {"type": "x"})
        for _ in range(5):
            await layer.send(roomy, {"type": "x"})

    @pytest.mark.asyncio
    async def test_group_send_to_full_member_does_not_raise(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=1)
        group = "g-" + secrets.token_hex(4)
        full, free = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, full)
        await layer.group_add(group, free)
        await layer.send(full, {"type": "filler"})
        await layer.group_send(group, {"type": "broadcast"})
        assert (await receive_within(layer, full))["type"] == "filler"
        assert (await receive_within(layer, free))["type"] == "broadcast"

    @pytest.mark.asyncio
    async def test_expiry_on_own_channel(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(expiry=1)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "stale"})
        await asyncio.sleep(1.2)
        await layer.send(channel, {"type": "fresh"})
        assert (await receive_within(layer, channel))["type"] == "fresh"

    @pytest.mark.asyncio
    async def test_expiry_on_worker_channel(self, make_layer: Callable[..., Any]) -> None:
        sender, reader = make_layer(expiry=1), make_layer(expiry=1)
        channel = "exp-" + secrets.token_hex(4)
        await assert_nothing_arrives(reader, channel, wait=0.2)
        await sender.send(channel, {"type": "stale"})
        await asyncio.sleep(1.3)
        await sender.send(channel, {"type": "fresh"})
        assert (await receive_within(reader, channel))["type"] == "fresh"

    @pytest.mark.asyncio
    async def test_group_expiry(self, make_layer: Callable[..., Any]) -> None:
        layer = make_layer(group_expiry=1)
        group = "g-" + secrets.token_hex(4)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await asyncio.sleep(1.2)
        await layer.group_send(group, {"type": "too late"})
        await assert_nothing_arrives(layer, channel)

    # -- validation ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    @pytest.mark.parametrize("name", BAD_CHANNEL_NAMES, ids=repr)
    async def test_bad_channel_name_raises_type_error(self, layer: Any, name: Any) -> None:
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send(name, {"type": "x"})

    @pytest.mark.asyncio
    @pytest.mark.parametrize("name", BAD_GROUP_NAMES, ids=repr)
    async def test_bad_group_name_raises_type_error(self, layer: Any, name: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add(name, channel)
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_send(name, {"type": "x"})

    @pytest.mark.asyncio
    async def test_names_with_a_trailing_newline_are_refused(self, layer: Any) -> None:
        # Channels' patterns end in "$", which also matches before a final newline; a newline
        # inside a broker subject would corrupt the NATS protocol, so names are matched whole.
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send(channel + "\n", {"type": "x"})
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add("group\n", channel)

    @pytest.mark.asyncio
    @pytest.mark.parametrize("message", [["a", "list"], "text", None, 42], ids=repr)
    async def test_message_must_be_a_dict(self, layer: Any, message: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="message must be a dict"):
            await layer.send(channel, message)
        with pytest.raises(TypeError, match="message must be a dict"):
            await layer.group_send("g", message)

    @pytest.mark.asyncio
    async def test_reserved_key_is_refused(self, layer: Any) -> None:
        channel = await layer.new_channel()
        with pytest.raises(ValueError, match="__asgi_channel__"):
            await layer.send(channel, {"type": "x", "__asgi_channel__": "y"})

    @pytest.mark.asyncio
    @pytest.mark.parametrize("value", [object(), {1, 2}, 2**70], ids=["object", "set", "bigint"])
    async def test_unencodable_message_raises_type_error_everywhere(
        self, layer: Any, value: Any
    ) -> None:
        channel = await layer.new_channel()
        with pytest.raises(TypeError, match="cannot be sent"):
            await layer.send(channel, {"type": "x", "value": value})

    @pytest.mark.asyncio
    async def test_cannot_receive_on_another_instances_channel(
        self, make_layer: Callable[..., Any]
    ) -> None:
        owner, other = make_layer(), make_layer()
        channel = await owner.new_channel()
        with pytest.raises(ValueError, match="belongs to another process"):
            await other.receive(channel)

    def test_unknown_option_is_named(self, layer_spec: LayerSpec) -> None:
        with pytest.raises(TypeError, match="no_such_option"):
            layer_spec.build(no_such_option=1)

    def test_extensions_readable_from_sync_code(self, layer: Any) -> None:
        assert "groups" in layer.extensions
        assert "flush" in layer.extensions

    # -- payloads ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_one_megabyte_message(self, make_layer: Callable[..., Any]) -> None:
        sender, receiver = make_layer(), make_layer()
        channel = await receiver.new_channel()
        blob = os.urandom(1_000_000)
        await sender.send(channel, {"type": "blob", "data": blob})
        assert (await receive_within(receiver, channel))["data"] == blob

    @pytest.mark.asyncio
    async def test_value_types_round_trip(self, make_layer: Callable[..., Any]) -> None:
        sender, receiver = make_layer(), make_layer()
        channel = await receiver.new_channel()
        message = {
            "type": "types",
            "bytes": b"\x00\xffbinary",
            "text": "unicode ✓ ünï",
            "int": -(2**63),
            "big": 2**64 - 1,
            "float": 3.25,
            "bool": True,
            "none": None,
            "nested": {"list": [1, [2, {"deep": b"x"}]], "empty": {}},
        }
        await sender.send(channel, message)
        assert await receive_within(receiver, channel) == message

    # -- async hygiene -------------------------------------------------------------------------

    def test_async_to_sync_from_threads_leaves_nothing_behind(self, layer: Any) -> None:
        """Django views and Celery tasks call the layer through async_to_sync: one new event
        loop per call. Each call must work and leave no socket, task or state behind."""
        consumer_loop = asyncio.new_event_loop()
        consumer_thread = threading.Thread(target=consumer_loop.run_forever, daemon=True)
        consumer_thread.start()

        def on_consumer_loop(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, consumer_loop).result(30)

        try:
            channel = on_consumer_loop(layer.new_channel())
            errors: list[BaseException] = []

            def view() -> None:
                try:
                    for n in range(5):
                        async_to_sync(layer.send)(channel, {"type": "x", "n": n})
                        async_to_sync(layer.group_send)("sync-group", {"type": "x"})
                except BaseException as exc:
                    errors.append(exc)

            view()  # warm up imports and lazy state before counting descriptors
            fds_before = open_fd_count()
            threads = [threading.Thread(target=view) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            gc.collect()
            assert not errors, errors
            assert open_fd_count() <= fds_before
            processes = getattr(layer, "_processes", {})
            assert all(not loop.is_closed() for loop in processes), "a closed loop kept state"
            received = [on_consumer_loop(receive_within(layer, channel))["n"] for _ in range(20)]
            assert sorted(received) == sorted(list(range(5)) * 4)
        finally:
            consumer_loop.call_soon_threadsafe(consumer_loop.stop)
            consumer_thread.join()
            consumer_loop.close()
        assert open_fd_count() < fds_before

    @pytest.mark.asyncio
    async def test_cancelled_receives_lose_and_duplicate_nothing(
        self, make_layer: Callable[..., Any]
    ) -> None:
        layer = make_layer(capacity=2000)
        channel = await layer.new_channel()
        sent = 1000

        async def produce() -> None:
            for n in range(sent):
                await layer.send(channel, {"type": "n", "n": n})
                if n % 10 == 0:
                    await asyncio.sleep(0)

        producer = asyncio.ensure_future(produce())
        received: list[int] = []
        cancelled = 0
        while cancelled < 1000 or len(received) < sent:
            task = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)
            if cancelled < 1000 and not task.done():
                task.cancel()
                cancelled += 1
                try:
                    received.append((await task)["n"])
                except asyncio.CancelledError:
                    pass
            else:
                received.append((await asyncio.wait_for(task, RECEIVE_TIMEOUT))["n"])
        await producer
        assert received == list(range(sent))
