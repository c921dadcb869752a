"""Redis security: passwords, ACL users, TLS, mutual TLS, unix sockets, least privilege.

Against real ``redis-server`` processes these tests start (``RedisServer(password=..., users=...,
tls=..., tcp=...)``, certificates from :class:`~tests.support.tls.TestCA`):

* every way in works end to end — a send across instances, a group member in the other
  instance, an ask, a worker channel and ``flush()``;
* every way of being refused fails the first call within a second with ``BrokerUnavailable``
  (``PermissionDenied`` for a permission) naming the masked URL and the cause;
* commands refused at run time (``ACL SETUSER`` after connecting): an awaited one raises
  ``PermissionDenied``, a fire-and-forget ``PUBLISH`` is counted as ``refused``;
* a sentinel password never shows in exceptions, logs, reprs or a ``manage.py`` run;
* the same under Redis Sentinel (a master, a replica and sentinels that all want a password):
  the master's password and the sentinels' (``sentinel_kwargs``) work, wrong ones fail at once
  with ``cause="authentication"``, and neither ever shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from redis.exceptions import AuthenticationError

from channels_neffos import BrokerUnavailable, PermissionDenied, RedisChannelLayer
from channels_neffos.security import redis_acl, redis_acl_rules
from channels_neffos.testing.brokers import RedisServer
from channels_neffos.testing.conformance import receive_within, unique_prefix
from channels_neffos.transports.redis import RedisTransport
from channels_neffos.transports.redis_connect import connection_source, redact_redis_url
from channels_neffos.transports.sentinel import sentinel_address
from tests.support.redis_sentinel import RedisSentinelGroup
from tests.support.tls import CertFiles, TestCA

#: The password of every server here: a sentinel, so that a leak anywhere is found.
PASSWORD = "S3ntinel-" + uuid.uuid4().hex
#: A password that is configured but wrong — must not leak either.
WRONG = "S3ntinel-wrong-" + uuid.uuid4().hex
#: "At once": a refusal must not wait for retries or timeouts.
PROMPT = 1.0

Hosts = list[str | dict[str, Any]]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def client_cert(ca: TestCA) -> CertFiles:
    return ca.client_files("channels-neffos-test")


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    """requirepass for ``default``, and an ACL file with a user for a fixed prefix."""
    with RedisServer(password=PASSWORD, users=[redis_acl("acl-file", "filed", PASSWORD)]) as s:
        yield s


@pytest.fixture(scope="module")
def tls_server(ca: TestCA) -> Iterator[RedisServer]:
    with RedisServer(tls=ca.server_tls()) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(ca: TestCA) -> Iterator[RedisServer]:
    with RedisServer(tls=ca.server_tls(verify_clients=True)) as server:
        yield server


@pytest.fixture(scope="module")
def unix_server() -> Iterator[RedisServer]:
    with RedisServer(tcp=False, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def sentinel_auth() -> Iterator[RedisSentinelGroup]:
    """Master, replica and sentinels that each want PASSWORD (the sentinels ``requirepass``)."""
    with RedisSentinelGroup(password=PASSWORD, sentinel_password=PASSWORD) as group:
        yield group


def acl_user(server: RedisServer, prefix: str, *extra_rules: str) -> str:
    """A new ACL user with the minimal rules for ``prefix`` (then ``extra_rules``); its URL."""
    user = f"u-{prefix}"
    server.acl_setuser(user, "reset", "on", f">{PASSWORD}", *redis_acl_rules(prefix), *extra_rules)
    return server.url_for(user, PASSWORD)


def tls_host(server: RedisServer, ca: TestCA, cert: CertFiles | None = None) -> dict[str, Any]:
    host: dict[str, Any] = {"address": server.url, "ssl_ca_certs": str(ca.ca_file)}
    if cert is not None:
        host |= {"ssl_certfile": str(cert.cert_file), "ssl_keyfile": str(cert.key_file)}
    return host


WAYS_IN = [
    "password-url",
    "password-dict",
    "acl-user",
    "acl-file-user",
    "tls",
    "mtls",
    "unix",
    "sentinel",
]


@pytest.fixture
def way_in(request: pytest.FixtureRequest) -> tuple[Hosts, str]:
    """(hosts, prefix) for one way of connecting: ``request.param`` names it."""
    case = request.param
    get = request.getfixturevalue
    prefix = unique_prefix()
    if case == "password-url":
        return [get("auth_server").url_for(password=PASSWORD)], prefix
    if case == "password-dict":
        port = get("auth_server").port
        return [{"host": "127.0.0.1", "port": port, "password": PASSWORD}], prefix
    if case == "acl-user":
        return [acl_user(get("auth_server"), prefix)], prefix
    if case == "acl-file-user":
        return [get("auth_server").url_for("filed", PASSWORD)], "acl-file"
    if case == "tls":
        return [tls_host(get("tls_server"), get("ca"))], prefix
    if case == "mtls":
        return [tls_host(get("mtls_server"), get("ca"), get("client_cert"))], prefix
    if case == "unix":
        return [get("unix_server").url_for(password=PASSWORD)], prefix
    if case == "sentinel":
        return [get("sentinel_auth").hosts_entry()], prefix
    raise ValueError(case)


@pytest.mark.asyncio
@pytest.mark.parametrize("way_in", WAYS_IN, indirect=True)
async def test_layers_work_end_to_end(way_in: tuple[Hosts, str]) -> None:
    hosts, prefix = way_in
    one = RedisChannelLayer(hosts=hosts, prefix=prefix)
    two = RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        channel = await two.new_channel()
        await one.send(channel, {"type": "across"})
        assert (await receive_within(two, channel))["type"] == "across"

        await two.group_add("room", channel)
        await one.group_send("room", {"type": "to-group"})
        assert (await receive_within(two, channel))["type"] == "to-group"

        async def answer() -> None:
            request = await receive_within(two, channel)
            await two.reply(request, {"echo": request["n"]})

        answering = asyncio.ensure_future(answer())
        assert await one.ask(channel, {"type": "question", "n": 7}, timeout=5) == {"echo": 7}
        await answering

        await one.send("work", {"type": "job"})  # EVAL of the push script, then BRPOP
        assert (await receive_within(two, "work"))["type"] == "job"
        await one.send("work", {"type": "left-over"})
        await one.flush()  # SCAN + UNLINK
    finally:
        await one.close()
        await two.close()


def failure_case(case: str, get: Callable[[str], Any]) -> tuple[Hosts, str, str]:
    """(hosts, the URL the error must name, the cause) for one way of being refused."""
    if case == "wrong-password-url":
        url = get("auth_server").url_for(password=WRONG)
        return [url], redact_redis_url(url), "authentication"
    if case == "wrong-password-dict":
        server = get("auth_server")
        host = {"host": "127.0.0.1", "port": server.port, "password": WRONG}
        return [host], f"redis://:***@127.0.0.1:{server.port}", "authentication"
    if case == "missing-password":
        return [get("auth_server").url], get("auth_server").url, "authentication"
    if case == "unknown-acl-user":
        url = get("auth_server").url_for("nobody", PASSWORD)
        return [url], redact_redis_url(url), "authentication"
    if case == "missing-password-unix":
        return [get("unix_server").url], get("unix_server").url, "authentication"
    if case == "untrusted-ca":
        other_ca = TestCA(get("tmp_path"))
        server = get("tls_server")
        return [tls_host(server, other_ca)], server.url, "TLS verification"
    if case == "wrong-host-name":
        ca = get("ca")
        server = RedisServer(tls=ca.server_tls("example.invalid"))
        server.start()
        get("request").addfinalizer(lambda: server.__exit__(None, None, None))
        return [tls_host(server, ca)], server.url, "TLS verification"
    if case == "no-client-certificate":
        server = get("mtls_server")
        return [tls_host(server, get("ca"))], server.url, "TLS verification"
    if case == "client-certificate-of-another-ca":
        server, other_ca = get("mtls_server"), TestCA(get("tmp_path"))
        return (
            [tls_host(server, get("ca"), other_ca.client_files())],
            server.url,
            "TLS verification",
        )
    if case == "acl-user-without-ping":
        url = acl_user(get("auth_server"), unique_prefix(), "-ping")
        return [url], redact_redis_url(url), "permission"
    if case.startswith("sentinel-"):
        group = get("sentinel_auth")
        host = {
            "sentinel-wrong-password": group.hosts_entry(password=WRONG),
            "sentinel-wrong-sentinel-password": group.hosts_entry(
                sentinel_kwargs={"password": WRONG}
            ),
            "sentinel-missing-sentinel-password": {
                key: value for key, value in group.hosts_entry().items() if key != "sentinel_kwargs"
            },
        }[case]
        return [host], sentinel_address(host), "authentication"
    raise ValueError(case)


HEADLINES = {
    "authentication": "authentication failed",
    "TLS verification": "TLS verification failed",
    "permission": "permission denied",
}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "case",
    [
        "wrong-password-url",
        "wrong-password-dict",
        "missing-password",
        "unknown-acl-user",
        "missing-password-unix",
        "untrusted-ca",
        "wrong-host-name",
        "no-client-certificate",
        "client-certificate-of-another-ca",
        "acl-user-without-ping",
        "sentinel-wrong-password",
        "sentinel-wrong-sentinel-password",
        "sentinel-missing-sentinel-password",
    ],
)
async def test_refusals_fail_at_once_naming_url_and_cause(
    case: str, request: pytest.FixtureRequest
) -> None:
    hosts, url, cause = failure_case(case, request.getfixturevalue)
    layer = RedisChannelLayer(hosts=hosts, prefix=unique_prefix())
    started = time.monotonic()
    expected = PermissionDenied if cause == "permission" else BrokerUnavailable
    with pytest.raises(expected) as refused:
        await layer.new_channel()
    assert time.monotonic() - started < PROMPT
    error = refused.value
    assert error.cause == cause
    assert error.url == url
    assert url in str(error) and HEADLINES[cause] in str(error)
    assert PASSWORD not in repr(error.args) and WRONG not in repr(error.args)
    await layer.close()


def test_dict_and_url_hosts_are_shown_without_secrets() -> None:
    shown = {
        connection_source(host)[1]
        for host in [
            f"redis://:{WRONG}@127.0.0.1:1/0",
            f"redis://alice:{WRONG}@127.0.0.1:1",
            f"redis://{WRONG}@127.0.0.1:1",  # a password in the user's place
            f"unix://:{WRONG}@/tmp/redis.sock",
            f"redis://127.0.0.1:1?password={WRONG}&db=2",
            {"address": f"rediss://:{WRONG}@127.0.0.1:1", "ssl_password": WRONG},
            {"host": "127.0.0.1", "port": 1, "password": WRONG, "ssl_password": WRONG},
            {"host": "127.0.0.1", "port": 1, "username": "alice", "password": WRONG},
            {"path": "/tmp/redis.sock", "password": WRONG},
        ]
    }
    assert not [url for url in shown if WRONG in url]
    assert "redis://alice:***@127.0.0.1:1" in shown
    assert "unix://:***@/tmp/redis.sock" in shown
    assert "redis://127.0.0.1:1?password=***&db=2" in shown


class NoEvents:
    def connection_lost(self, reason: BaseException | None) -> None: ...

    def connection_restored(self) -> None: ...

    def no_responders(self, reply_subject: str) -> None: ...

    def dropped(self, reason: str, where: str) -> None: ...


def test_a_secret_in_a_redis_py_error_is_masked_and_not_chained() -> None:
    """Should redis-py ever put a configured secret in an error, our boundary holds it back."""
    transport = RedisTransport(
        {"address": "redis://127.0.0.1:1", "password": WRONG}, "p", NoEvents()
    )
    leaky = AuthenticationError(f"refused the password {WRONG}")
    error = transport.broker_unavailable(leaky, connecting=True)
    assert error.cause == "authentication" and "refused the password ***" in str(error)
    assert transport._chainable(leaky) is None  # raised "from None", outside the handler
    assert transport._chainable(AuthenticationError("refused")) is not None


# -- refused at run time --------------------------------------------------------------------------


@pytest.fixture
def restricted(auth_server: RedisServer) -> Iterator[tuple[RedisChannelLayer, RedisChannelLayer]]:
    """(a layer as a least-privilege ACL user, a layer as ``default``) on one prefix."""
    prefix = unique_prefix()
    history = {"h-*": {"size": 10, "ttl": 60}}  # history groups: their keys and scripts too
    url = acl_user(auth_server, prefix)
    user = RedisChannelLayer(hosts=[url], prefix=prefix, history=history)
    admin_url = auth_server.url_for(password=PASSWORD)
    admin = RedisChannelLayer(hosts=[admin_url], prefix=prefix, history=history)
    yield user, admin
    auth_server.admin_command("ACL", "DELUSER", f"u-{prefix}")


def revoke(server: RedisServer, layer: RedisChannelLayer, *rules: str) -> None:
    server.acl_setuser(f"u-{layer.prefix}", *rules)


async def closing(*layers: RedisChannelLayer) -> None:
    for layer in layers:
        await layer.close()


@pytest.mark.asyncio
async def test_a_refused_publish_is_counted_and_logged_not_raised(
    auth_server: RedisServer,
    restricted: tuple[RedisChannelLayer, RedisChannelLayer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user, admin = restricted
    try:
        channel = await admin.new_channel()
        await admin.group_add("room", channel)
        await user.send(channel, {"type": "allowed"})
        assert (await receive_within(admin, channel))["type"] == "allowed"
        revoke(auth_server, user, "-publish")
        with caplog.at_level(logging.WARNING, logger="channels_neffos"):
            await user.send(channel, {"type": "refused"})
            await user.group_send("room", {"type": "refused too"})
            for _ in range(100):  # the refusals come back within PROMPT
                if user.counters["refused"] >= 2:
                    break
                await asyncio.sleep(PROMPT / 100)
        assert user.counters["refused"] == 2
        assert [r for r in caplog.records if "refused" in r.getMessage()]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(admin.receive(channel), 0.2)
    finally:
        await closing(user, admin)


@pytest.mark.asyncio
async def test_refused_awaited_commands_raise_permission_denied(
    auth_server: RedisServer, restricted: tuple[RedisChannelLayer, RedisChannelLayer]
) -> None:
    user, admin = restricted
    try:
        channel = await admin.new_channel()
        await user.send("work", {"type": "allowed"})
        await user.new_channel()  # connected, and its PSUBSCRIBE was allowed

        revoke(auth_server, user, "-eval")
        started = time.monotonic()
        with pytest.raises(PermissionDenied, match="permission denied") as refused:
            await user.send("work", {"type": "refused"})
        assert refused.value.cause == "permission" and "eval" in str(refused.value)

        revoke(auth_server, user, "-publish")
        with pytest.raises(PermissionDenied):  # an ask's PUBLISH waits for its answer
            await user.ask(channel, {"type": "question"}, timeout=5)

        revoke(auth_server, user, "-brpop")
        with pytest.raises(PermissionDenied):
            await asyncio.wait_for(user.receive("work"), 5)
        assert time.monotonic() - started < 3 * PROMPT
    finally:
        await closing(user, admin)


@pytest.mark.asyncio
async def test_a_refused_subscribe_raises_at_once_and_the_connection_carries_on(
    auth_server: RedisServer, restricted: tuple[RedisChannelLayer, RedisChannelLayer]
) -> None:
    user, admin = restricted
    try:
        channel = await user.new_channel()
        revoke(auth_server, user, "-subscribe")
        started = time.monotonic()
        with pytest.raises(PermissionDenied, match="subscribe"):
            await user.group_add("room", channel)
        assert time.monotonic() - started < PROMPT
        revoke(auth_server, user, "+subscribe")
        await user.group_add("room", channel)  # the pub/sub connection still works
        await admin.group_send("room", {"type": "after"})
        assert (await receive_within(user, channel))["type"] == "after"
    finally:
        await closing(user, admin)


@pytest.mark.asyncio
async def test_a_refused_psubscribe_raises_at_once(
    auth_server: RedisServer, restricted: tuple[RedisChannelLayer, RedisChannelLayer]
) -> None:
    user, admin = restricted
    try:
        revoke(auth_server, user, "clearselectors")  # the selector grants PSUBSCRIBE
        started = time.monotonic()
        with pytest.raises(PermissionDenied, match="psubscribe"):
            await user.new_channel()
        assert time.monotonic() - started < PROMPT
    finally:
        await closing(user, admin)


@pytest.mark.asyncio
async def test_subscriptions_refused_after_a_reconnect_are_logged_once(
    auth_server: RedisServer,
    restricted: tuple[RedisChannelLayer, RedisChannelLayer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Revoking channels makes Redis drop the subscribed connection; re-subscribing is refused:
    an error line per refused command, no reconnect loop."""
    user, admin = restricted
    try:
        channel = await user.new_channel()
        await user.group_add("room", channel)
        with caplog.at_level(logging.WARNING, logger="channels_neffos"):
            revoke(auth_server, user, "resetchannels", "clearselectors")
            for _ in range(100):
                if len([r for r in caplog.records if r.levelno == logging.ERROR]) >= 2:
                    break
                await asyncio.sleep(PROMPT / 100)
            await asyncio.sleep(0.1)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and all("permission denied" in e for e in errors)
        assert "SUBSCRIBE" in errors[0] and "PSUBSCRIBE" in errors[1]
        assert user.counters["connection_lost"] == 1
    finally:
        await closing(user, admin)


@pytest.mark.asyncio
async def test_the_acl_confines_the_user_to_its_prefix(
    auth_server: RedisServer, restricted: tuple[RedisChannelLayer, RedisChannelLayer]
) -> None:
    """Another prefix on the same credentials: its channels and keys are refused."""
    user, admin = restricted
    url = acl_user(auth_server, user.prefix)
    history = {"h-*": {"size": 10, "ttl": 60}}
    outsider = RedisChannelLayer(hosts=[url], prefix=unique_prefix(), history=history)
    try:
        channel = await outsider.new_channel()  # PSUBSCRIBE: allowed on any pattern (docs)
        with pytest.raises(PermissionDenied):
            await outsider.send("work", {"type": "x"})
        with pytest.raises(PermissionDenied):  # another prefix's history: keys out of reach
            await outsider.group_history("h-room")
        with pytest.raises(PermissionDenied):
            await outsider.group_add("room", channel)
        other = await admin.new_channel()
        with pytest.raises(PermissionDenied):
            await outsider.ask(other, {"type": "x"}, timeout=5)
    finally:
        await closing(outsider, user, admin)


@pytest.mark.asyncio
async def test_the_minimal_acl_covers_every_command_the_layer_sends(
    auth_server: RedisServer, restricted: tuple[RedisChannelLayer, RedisChannelLayer]
) -> None:
    """Nothing the layer does as the restricted user lands in ``ACL LOG``."""
    user, admin = restricted
    auth_server.admin_command("ACL", "LOG", "RESET")
    try:
        channel = await user.new_channel()
        other = await admin.new_channel()
        await user.group_add("room", channel)
        await admin.group_send("room", {"type": "g"})
        assert (await receive_within(user, channel))["type"] == "g"
        await user.group_discard("room", channel)
        await user.send(other, {"type": "c"})
        await receive_within(admin, other)
        await user.send("work", {"type": "w"})
        assert (await receive_within(user, "work"))["type"] == "w"
        await user.group_add("h-room", channel)  # a history group: its scripts and subjects
        await admin.group_send("h-room", {"type": "h"})
        assert (await receive_within(user, channel))["__position__"]["offset"] == 1
        await user.group_send("h-room", {"type": "h"})
        assert (await receive_within(user, channel))["__position__"]["offset"] == 2
        assert [m["type"] for m in (await user.group_history("h-room")).messages] == ["h", "h"]
        await user.flush()
        await user.close()  # PUNSUBSCRIBE and the rest
        await asyncio.sleep(0.1)
        log = auth_server.admin_command("ACL", "LOG")
        assert [e for e in log if e[b"username"] == f"u-{user.prefix}".encode()] == []
    finally:
        await closing(user, admin)


# -- the sentinel secret never shows -------------------------------------------------------------


def exception_texts(error: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield f"{current!s} {current!r} {current.args!r}"
        todo += [current.__cause__, current.__context__]


def reachable_reprs(layer: RedisChannelLayer) -> Iterator[str]:
    yield repr(layer)
    for process in layer._routers.values():
        transport = process.transport
        yield from (repr(process), repr(transport), repr(transport._pool))
        yield repr(transport._commands)
        if transport._blocking_client is not None:
            yield repr(transport._blocking_client)
            yield repr(transport._blocking_client.connection_pool)


@pytest.mark.asyncio
async def test_the_password_never_shows(
    auth_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    port = auth_server.port
    wrong_hosts: list[Hosts] = [
        [auth_server.url_for(password=WRONG)],
        [{"host": "127.0.0.1", "port": port, "password": WRONG}],
        [{"address": auth_server.url, "password": WRONG}],
        [f"redis://{WRONG}@127.0.0.1:{port}"],
        [f"redis://127.0.0.1:{port}?password={WRONG}"],
    ]
    with caplog.at_level(logging.DEBUG):
        for hosts in wrong_hosts:
            layer = RedisChannelLayer(hosts=hosts, prefix=unique_prefix())
            with pytest.raises(BrokerUnavailable) as refused:
                await layer.group_send("room", {"type": "x"})
            seen += exception_texts(refused.value)
            seen += reachable_reprs(layer)
            await layer.close()

        # The right password, then a server that changes it: the reconnect attempts log.
        right = RedisChannelLayer(
            hosts=[{"host": "127.0.0.1", "port": port, "password": PASSWORD}], prefix="sentinel"
        )
        channel = await right.new_channel()
        await right.send("work", {"type": "w"})
        await receive_within(right, "work")
        seen += reachable_reprs(right)
        admin = redis_asyncio.Redis(
            unix_socket_path=str(auth_server.socket_path), password=PASSWORD
        )
        try:
            await admin.config_set("requirepass", WRONG)
            await admin.client_kill_filter(_type="normal", skipme=True)
            await asyncio.sleep(0.5)  # a few reconnect attempts, refused
            await admin.config_set("requirepass", PASSWORD)
            await admin.client_kill_filter(_type="normal", skipme=True)
        finally:
            await admin.aclose()
        await right.close()
        assert channel

    formatter = logging.Formatter()
    seen += [formatter.format(record) for record in caplog.records]
    assert [r for r in caplog.records if "reconnecting to Redis" in r.getMessage()]
    leaks = [text for text in seen if PASSWORD in text or WRONG in text]
    assert leaks == []


@pytest.mark.asyncio
async def test_the_sentinel_passwords_never_show(
    sentinel_auth: RedisSentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong master and sentinel passwords, the right ones through a reconnect: neither the
    exceptions, nor the reprs, nor the logs (DEBUG, redis-py's too) show a password."""
    seen: list[str] = []
    wrong_hosts = [
        sentinel_auth.hosts_entry(password=WRONG),
        sentinel_auth.hosts_entry(sentinel_kwargs={"password": WRONG}),
        sentinel_auth.hosts_entry(password=WRONG, sentinel_kwargs={"password": WRONG}),
    ]
    with caplog.at_level(logging.DEBUG):
        for host in wrong_hosts:
            layer = RedisChannelLayer(hosts=[host], prefix=unique_prefix())
            with pytest.raises(BrokerUnavailable) as refused:
                await layer.group_send("room", {"type": "x"})
            assert refused.value.cause == "authentication"
            seen += exception_texts(refused.value)
            seen += reachable_reprs(layer)
            await layer.close()
        right = RedisChannelLayer(hosts=[sentinel_auth.hosts_entry()], prefix=unique_prefix())
        await right.send("work", {"type": "w"})
        await receive_within(right, "work")
        seen += reachable_reprs(right)
        # Every connection to the master dropped: the layer reconnects through the sentinels.
        sentinel_auth.master.admin_command("CLIENT", "KILL", "TYPE", "normal")
        for _ in range(300):
            try:
                await right.send("work", {"type": "again"})
                break
            except BrokerUnavailable as exc:
                seen += exception_texts(exc)
                await asyncio.sleep(0.01)
        await receive_within(right, "work")
        await right.close()
    formatter = logging.Formatter()
    seen += [formatter.format(record) for record in caplog.records]
    assert [r for r in caplog.records if "reconnect" in r.getMessage()]
    leaks = [text for text in seen if PASSWORD in text or WRONG in text]
    assert leaks == []


MANAGE_SETTINGS = """
SECRET_KEY = "not-a-secret"
INSTALLED_APPS = ["channels"]
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "channels_neffos.RedisChannelLayer",
        "CONFIG": {{"hosts": [{url!r}], "prefix": "manage"}},
    }},
    "dict": {{
        "BACKEND": "channels_neffos.RedisChannelLayer",
        "CONFIG": {{"hosts": [{dict_host!r}], "prefix": "manage"}},
    }},
}}
LOGGING = {{
    "version": 1,
    "handlers": {{"err": {{"class": "logging.StreamHandler"}}}},
    "root": {{"handlers": ["err"], "level": "DEBUG"}},
}}
"""

SHELL_COMMAND = """
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
for alias in ("default", "dict"):
    layer = get_channel_layer(alias)
    async_to_sync(layer.group_send)("room", {"type": "x"})
    print(alias, "sent", repr(layer))
"""


def run_manage(tmp_path: Path, port: int, password: str, *command: str) -> tuple[int, str]:
    """``python -m django <command>`` with both layers of MANAGE_SETTINGS using ``password``."""
    name = f"settings_{uuid.uuid4().hex}"
    settings = tmp_path / f"{name}.py"
    url = f"redis://:{password}@127.0.0.1:{port}"
    dict_host = {"host": "127.0.0.1", "port": port, "password": password}
    settings.write_text(MANAGE_SETTINGS.format(url=url, dict_host=dict_host))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run(
        [sys.executable, "-m", "django", *command, f"--settings={name}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return run.returncode, run.stdout + run.stderr


def test_manage_py_output_never_shows_the_password(
    auth_server: RedisServer, tmp_path: Path
) -> None:
    port = auth_server.port
    code, output = run_manage(tmp_path, port, WRONG, "shell", "-c", SHELL_COMMAND)
    assert code != 0 and "BrokerUnavailable" in output and "authentication failed" in output
    outputs = [output]
    code, output = run_manage(tmp_path, port, PASSWORD, "shell", "-c", SHELL_COMMAND)
    assert code == 0 and "default sent" in output and "dict sent" in output, output
    outputs.append(output)
    code, output = run_manage(tmp_path, port, PASSWORD, "check")
    assert code == 0, output
    outputs.append(output)
    assert [text for text in outputs if PASSWORD in text or WRONG in text] == []
