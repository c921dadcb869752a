"""The conformance suite against our two layers and, as the reference, Channels' in-memory layer."""

from __future__ import annotations

import pytest

from channels_neffos.testing.conformance import (
    ChannelLayerConformance,
    LayerSpec,
    NeffosLayerConformance,
)


class TestRedisChannelLayer(NeffosLayerConformance):
    @pytest.fixture
    def layer_spec(self, redis_spec: LayerSpec) -> LayerSpec:
        return redis_spec

    # A Redis list cannot tell an unread worker channel from a slow one: such an ask ends in
    # AskTimeout rather than NoResponders (documented in docs/ask.rst).
    test_no_responders_for_an_unread_worker_channel = None


class TestShardedRedisChannelLayer(NeffosLayerConformance):
    """One application over two Redis servers: every guarantee of a single server holds."""

    @pytest.fixture
    def layer_spec(self, sharded_redis_spec: LayerSpec) -> LayerSpec:
        return sharded_redis_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


class TestRedisClusterChannelLayer(NeffosLayerConformance):
    """A Redis Cluster of three nodes: pub/sub through one node, worker channels by slot."""

    @pytest.fixture
    def layer_spec(self, redis_cluster_spec: LayerSpec) -> LayerSpec:
        return redis_cluster_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server
    # A cluster node's PUBLISH counts only its own subscribers, so nothing can say "nobody
    # listens": these asks end in AskTimeout (docs/configuration.rst, redis_cluster.py).
    test_no_responders_when_the_owning_process_is_gone = None
    test_group_ask_no_responders_for_an_empty_group = None


class TestNatsChannelLayer(NeffosLayerConformance):
    @pytest.fixture
    def layer_spec(self, nats_spec: LayerSpec) -> LayerSpec:
        return nats_spec

    # NATS keeps no queue and tells no publisher how long one is: a worker channel sender
    # cannot know the receiver is full (the receiver drops and counts instead; tested in
    # test_nats.py).
    test_capacity_raises_channel_full_on_worker_channel = None


class TestInMemoryReference(ChannelLayerConformance):
    """Channels' own layer, to show the suite states Channels' semantics, not ours.

    Switched off: cases that need a broker shared by several instances or OS processes, and
    cases where channels_neffos is deliberately stricter (real exceptions where Channels
    asserts, msgpack-only values, reserved keys, thread safety).
    """

    @pytest.fixture
    def layer_spec(self) -> LayerSpec:
        return LayerSpec("channels.layers.InMemoryChannelLayer", {})

    test_fifo_from_another_instance = None
    test_fifo_worker_channel = None
    test_two_instances_exchange_process_channel_messages = None
    test_worker_channel_two_readers_each_message_once = None
    test_group_discard_then_nothing_arrives = None
    test_group_send_reaches_members_in_two_instances = None
    test_group_add_of_a_channel_in_another_instance = None
    test_group_send_reaches_member_in_another_os_process = None
    test_group_send_from_another_os_process = None
    test_send_from_another_os_process = None
    test_flush_drops_stored_worker_messages = None
    test_cannot_receive_on_another_instances_channel = None
    test_one_megabyte_message = None
    test_value_types_round_trip = None
    test_message_must_be_a_dict = None
    test_reserved_key_is_refused = None
    test_unencodable_message_raises_type_error_everywhere = None
    test_bad_channel_name_raises_type_error = None
    test_async_to_sync_from_threads_leaves_nothing_behind = None
    test_close_then_use_again = None
    test_names_with_a_trailing_newline_are_refused = None  # Channels' "$" accepts them
    test_channel_capacity_globs = None  # InMemoryChannelLayer never compiles the globs
    test_expiry_on_worker_channel = None  # an empty queue is dropped with its expiry state
    test_group_expiry = None  # whole-second timestamps make a 1 s expiry flaky
    test_group_send_exclude_holds_in_every_instance = None  # a channels_neffos extension


class TestMultiChannelLayer(NeffosLayerConformance):
    """The migration bridge (Redis + NATS children) keeps every guarantee of a single layer."""

    @pytest.fixture
    def layer_spec(self, multi_spec: LayerSpec) -> LayerSpec:
        return multi_spec

    # Worker channels go through the first child, Redis here: see TestRedisChannelLayer.
    test_no_responders_for_an_unread_worker_channel = None
