"""NATS authentication, TLS and subject permissions, against real nats-server processes.

* Every way to authenticate (user/password in the URL or in connect_options, token, NKey seed
  as a string or a file, a creds file in operator mode, TLS with a test CA, mutual TLS) carries
  a send across instances, a group_send and an ask.
* Every refusal (wrong credentials, an unknown key, a creds file of an unknown account or an
  expired user, a certificate that does not verify, a missing client certificate) fails the
  first call within a second with ``BrokerUnavailable`` naming the cause and the broker.
* Subjects the user lacks: ``PermissionDenied`` where the caller can know (subscribing, worker
  channel receive, asks), ``layer.counters["refused"]`` for plain publishes.
* Sentinel secrets never show: not in exceptions, logs, reprs, nor a Django process's output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels_neffos import BrokerUnavailable, NatsChannelLayer, PermissionDenied
from channels_neffos.security import nats_permissions
from channels_neffos.testing.brokers import NatsServer
from channels_neffos.testing.conformance import unique_prefix
from tests.support.nats_auth import NatsOperator, new_nkey, write_creds
from tests.support.tls import TestCA

PASSWORD = "pw-" + secrets.token_hex(8)
TOKEN = "tok-" + secrets.token_hex(8)
#: The password of the user "sentinel": accepted, and must never show anywhere either.
SENTINEL_PASSWORD = "sentinelRIGHT" + secrets.token_hex(6)
#: The prefix the permission tests' users are restricted to.
PREFIX = "sec"


def _deny(**deny: list[str]) -> dict[str, Any]:
    """nats_permissions(PREFIX) minus ``deny`` (``publish=[...]``, ``subscribe=[...]``)."""
    permissions: dict[str, Any] = nats_permissions(PREFIX)
    for operation, subjects in deny.items():
        permissions[operation] = {**permissions[operation], "deny": subjects}
    return permissions


# -- servers (one each per module: starting nats-server is cheap, but not free) -----------------


class Keys:
    """Credentials made for this module's servers."""

    nkey_user = new_nkey("user")
    operator = NatsOperator()
    account = operator.add_account("app")
    stranger = operator.add_account("stranger", preload=False)  # unknown to the server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats-security")


@pytest.fixture(scope="module")
def ca(workdir: Path) -> TestCA:
    return TestCA(workdir / "ca")


def client_tls(ca: TestCA, *, certificate_from: TestCA | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca``, with a client certificate from ``certificate_from``."""
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    if certificate_from is not None:
        files = certificate_from.client_files("client@example.com")
        context.load_cert_chain(files.cert_file, files.key_file)
    return context


@pytest.fixture(scope="module")
def users_server() -> Iterator[NatsServer]:
    """Users with passwords (some restricted to parts of PREFIX) and an NKey user."""
    users = [
        {"user": "app", "password": PASSWORD},
        {"nkey": Keys.nkey_user.public},
        # Publishing under another prefix only: cannot even listen on its process subject.
        {"user": "elsewhere", "password": PASSWORD, "permissions": nats_permissions("other")},
        {"user": "minimal", "password": PASSWORD, "permissions": nats_permissions(PREFIX)},
        # A prefix starting with "_" is escaped in subjects ("__under.>"), and so in permissions.
        {"user": "under", "password": PASSWORD, "permissions": nats_permissions("_under")},
        {
            "user": "sentinel",
            "password": SENTINEL_PASSWORD,
            "permissions": _deny(subscribe=[f"{PREFIX}.g.>"]),
        },
        {
            "user": "no-group-subscribe",
            "password": PASSWORD,
            "permissions": _deny(subscribe=[f"{PREFIX}.g.>", f"{PREFIX}.q.>"]),
        },
        {
            "user": "no-publish",
            "password": PASSWORD,
            "permissions": _deny(publish=[f"{PREFIX}.g.>", f"{PREFIX}.*.c.>", f"{PREFIX}.q.>"]),
        },
    ]
    with NatsServer(users=users) as server:
        yield server


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def operator_server() -> Iterator[NatsServer]:
    with NatsServer(operator=Keys.operator) as server:
        yield server


@pytest.fixture(scope="module")
def tls_server(ca: TestCA) -> Iterator[NatsServer]:
    with NatsServer(tls=ca.server_tls()) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(ca: TestCA) -> Iterator[NatsServer]:
    with NatsServer(tls=ca.server_tls(verify_clients=True)) as server:
        yield server


def with_credentials(server: NatsServer, credentials: str) -> str:
    return f"nats://{credentials}@127.0.0.1:{server.port}"


def creds_file(workdir: Path, **user: Any) -> str:
    account = user.pop("account", Keys.account)
    text, _ = Keys.operator.user_creds(account, "app", **user)
    return str(write_creds(workdir / f"{secrets.token_hex(4)}.creds", text))


# -- every way in works end to end --------------------------------------------------------------


async def exercise(config: dict[str, Any]) -> None:
    """Two instances: a cross-instance send, a group_send to the other's member, an ask."""
    prefix = config.pop("prefix", unique_prefix())
    sender = NatsChannelLayer(prefix=prefix, **config)
    receiver = NatsChannelLayer(prefix=prefix, **config)
    try:
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "hello", "n": 1})
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == 1
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "room.message", "n": 2})
        assert (await asyncio.wait_for(receiver.receive(channel), 5))["n"] == 2

        async def answer() -> None:
            request = await receiver.receive(channel)
            await receiver.reply(request, {"echo": request["n"]})

        answering = asyncio.ensure_future(answer())
        assert await sender.ask(channel, {"type": "question", "n": 3}, timeout=5) == {"echo": 3}
        await answering
        assert sender.counters["refused"] == receiver.counters["refused"] == 0
    finally:
        await sender.close()
        await receiver.close()


@pytest.fixture(
    params=[
        "password-in-url",
        "password-in-options",
        "token-in-url",
        "token-in-options",
        "nkey-seed-string",
        "nkey-seed-file",
        "creds-file",
        "creds-file-with-minimal-permissions",
        "tls-context",
        "tls-url-and-hostname",
        "mutual-tls",
        "minimal-permissions",
        "minimal-permissions-underscore-prefix",
    ]
)
def good_config(request: pytest.FixtureRequest, workdir: Path, ca: TestCA) -> dict[str, Any]:
    case = request.param
    server = request.getfixturevalue(
        {"token": "token_server", "creds": "operator_server", "tls": "tls_server"}.get(
            case.split("-")[0],
            "mtls_server" if case == "mutual-tls" else "users_server",
        )
    )
    seed_file = workdir / "user.nk"
    seed_file.write_text(Keys.nkey_user.seed)
    configs: dict[str, dict[str, Any]] = {
        "password-in-url": {"servers": [with_credentials(server, f"app:{PASSWORD}")]},
        "password-in-options": {"connect_options": {"user": "app", "password": PASSWORD}},
        "token-in-url": {"servers": [with_credentials(server, TOKEN)]},
        "token-in-options": {"connect_options": {"token": TOKEN}},
        "nkey-seed-string": {"connect_options": {"nkeys_seed_str": Keys.nkey_user.seed}},
        "nkey-seed-file": {"connect_options": {"nkeys_seed": str(seed_file)}},
        "creds-file": {"connect_options": {"user_credentials": creds_file(workdir)}},
        "creds-file-with-minimal-permissions": {  # permissions in the user JWT this time
            "connect_options": {
                "user_credentials": creds_file(workdir, permissions=nats_permissions(PREFIX))
            },
            "prefix": PREFIX,
        },
        "tls-context": {"connect_options": {"tls": client_tls(ca)}},
        "tls-url-and-hostname": {
            "servers": [f"tls://127.0.0.1:{server.port}"],
            "connect_options": {"tls": client_tls(ca), "tls_hostname": "localhost"},
        },
        "mutual-tls": {"connect_options": {"tls": client_tls(ca, certificate_from=ca)}},
        "minimal-permissions": {
            "servers": [with_credentials(server, f"minimal:{PASSWORD}")],
            "prefix": PREFIX,
        },
        "minimal-permissions-underscore-prefix": {
            "servers": [with_credentials(server, f"under:{PASSWORD}")],
            "prefix": "_under",
        },
    }
    return {"servers": [server.url], **configs[case]}


@pytest.mark.asyncio
async def test_layers_work_end_to_end(good_config: dict[str, Any]) -> None:
    await exercise(good_config)


# -- every refusal fails the first call at once, naming the cause -------------------------------


@pytest.fixture(
    params=[
        "wrong-password-in-url",
        "wrong-password-in-options",
        "missing-password",
        "wrong-token-in-url",
        "wrong-token-in-options",
        "unknown-nkey",
        "unknown-nkey-file",
        "creds-of-an-unknown-account",
        "expired-user-jwt",
        "missing-creds-file",
        "untrusted-server-certificate",
        "wrong-server-host-name",
        "no-client-certificate",
        "client-certificate-of-another-ca",
    ]
)
def refused_config(
    request: pytest.FixtureRequest, workdir: Path, ca: TestCA
) -> tuple[dict[str, Any], str]:
    """A layer CONFIG the server refuses, and the cause it must be reported with."""
    case: str = request.param
    if "token" in case:
        server = request.getfixturevalue("token_server")
    elif "creds" in case or "jwt" in case:
        server = request.getfixturevalue("operator_server")
    elif "client-certificate" in case:
        server = request.getfixturevalue("mtls_server")
    elif "certificate" in case or "host-name" in case:
        server = request.getfixturevalue("tls_server")
    else:
        server = request.getfixturevalue("users_server")
    stranger_seed = workdir / "stranger.nk"
    stranger_seed.write_text(new_nkey("user").seed)
    other_ca = TestCA(workdir / "other-ca")
    configs: dict[str, dict[str, Any]] = {
        "wrong-password-in-url": {"servers": [with_credentials(server, "app:wrong")]},
        "wrong-password-in-options": {"connect_options": {"user": "app", "password": "wrong"}},
        "missing-password": {},
        "wrong-token-in-url": {"servers": [with_credentials(server, "wrong-token")]},
        "wrong-token-in-options": {"connect_options": {"token": "wrong-token"}},
        "unknown-nkey": {"connect_options": {"nkeys_seed_str": new_nkey("user").seed}},
        "unknown-nkey-file": {"connect_options": {"nkeys_seed": str(stranger_seed)}},
        "creds-of-an-unknown-account": {
            "connect_options": {"user_credentials": creds_file(workdir, account=Keys.stranger)}
        },
        "expired-user-jwt": {
            "connect_options": {
                "user_credentials": creds_file(workdir, expires_at=time.time() - 60)
            }
        },
        "missing-creds-file": {
            "connect_options": {"user_credentials": str(workdir / "missing.creds")}
        },
        "untrusted-server-certificate": {},  # the system's CAs do not know the test CA
        "wrong-server-host-name": {
            "connect_options": {"tls": client_tls(ca), "tls_hostname": "example.com"}
        },
        "no-client-certificate": {"connect_options": {"tls": client_tls(ca)}},
        "client-certificate-of-another-ca": {
            "connect_options": {"tls": client_tls(ca, certificate_from=other_ca)}
        },
    }
    tls_cases = ("certificate", "host-name")
    cause = "TLS verification" if any(word in case for word in tls_cases) else "authentication"
    return {"servers": [server.url], **configs[case]}, cause


@pytest.mark.asyncio
async def test_refusals_fail_fast_with_their_cause(
    refused_config: tuple[dict[str, Any], str],
) -> None:
    config, cause = refused_config
    layer = NatsChannelLayer(prefix=unique_prefix(), **config)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as refused:
        await layer.new_channel()
    assert time.monotonic() - started < 1.0
    assert refused.value.cause == cause
    message = str(refused.value)
    assert f"{cause} failed with the broker at nats://" in message
    assert f"127.0.0.1:{config['servers'][0].rsplit(':', 1)[1]}" in message
    with pytest.raises(BrokerUnavailable):  # and the next call says the same, at once
        await layer.group_send("g", {"type": "x"})


# -- subjects the user lacks ----------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (a counter the server's asynchronous -ERR updates) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 (nothing to await)
        await asyncio.sleep(0.02)


def restricted(server: NatsServer, user: str, **options: Any) -> NatsChannelLayer:
    return NatsChannelLayer(
        servers=[with_credentials(server, f"{user}:{PASSWORD}")], prefix=PREFIX, **options
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("permissions_in", ["server-config", "user-jwt"])
async def test_a_user_without_its_prefix_cannot_listen(
    permissions_in: str, users_server: NatsServer, operator_server: NatsServer, workdir: Path
) -> None:
    if permissions_in == "server-config":
        layer = restricted(users_server, "elsewhere")
        shown_url = f"nats://elsewhere:***@127.0.0.1:{users_server.port}"
    else:
        creds = creds_file(workdir, permissions=nats_permissions("other"))
        layer = NatsChannelLayer(
            servers=[operator_server.url],
            connect_options={"user_credentials": creds},
            prefix=PREFIX,
        )
        shown_url = operator_server.url
    started = time.monotonic()
    with pytest.raises(PermissionDenied) as refused:
        await layer.new_channel()
    assert time.monotonic() - started < 1.0
    assert refused.value.cause == "permission"
    assert "may not subscribe to 'sec." in str(refused.value)
    assert f"permission denied by the broker at {shown_url}" in str(refused.value)
    await layer.close()


@pytest.mark.asyncio
async def test_refused_subscriptions_raise_permission_denied(users_server: NatsServer) -> None:
    layer = restricted(users_server, "no-group-subscribe")
    try:
        channel = await layer.new_channel()  # its process subject is allowed
        started = time.monotonic()
        with pytest.raises(PermissionDenied, match=r"may not subscribe to 'sec\.g\.room'"):
            await layer.group_add("room", channel)
        with pytest.raises(PermissionDenied, match=r"may not subscribe to 'sec\.q\.jobs'"):
            await asyncio.wait_for(layer.receive("jobs"), 5)  # a worker channel's queue group
        assert time.monotonic() - started < 2.0
        await layer.send(channel, {"type": "still.works"})  # the connection is fine
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "still.works"
    finally:
        await layer.close()


@pytest.mark.asyncio
async def test_refused_requests_raise_and_refused_publishes_are_counted(
    users_server: NatsServer,
) -> None:
    asker = restricted(users_server, "no-publish")
    responder = restricted(users_server, "minimal")
    try:
        channel = await responder.new_channel()
        await responder.group_add("room", channel)
        started = time.monotonic()
        for ask in (
            asker.ask(channel, {"type": "q"}, timeout=5),
            asker.group_ask("room", {"type": "q"}, timeout=5),
            asker.ask("jobs", {"type": "q"}, timeout=5),
        ):
            with pytest.raises(PermissionDenied, match=r"may not publish to 'sec\."):
                await ask
        assert time.monotonic() - started < 1.0

        await asker.send(channel, {"type": "lost"})
        await asker.group_send("room", {"type": "lost"})
        await until(lambda: asker.counters["refused"] >= 5)
        assert asker.counters["refused"] == 5  # the three asks and the two publishes
        # What is allowed still flows: the responder's own subjects, from the responder.
        await responder.group_send("room", {"type": "ok"})
        assert (await asyncio.wait_for(responder.receive(channel), 5))["type"] == "ok"
    finally:
        await asker.close()
        await responder.close()


def test_nats_permissions_are_the_prefix_the_presence_bucket_and_the_history_stream_only() -> None:
    permissions = nats_permissions("myapp")
    assert permissions["subscribe"] == {"allow": ["myapp.>"]}
    published = permissions["publish"]["allow"]
    assert published[0] == "myapp.>"
    for subject in published[1:]:  # the JetStream API of its one bucket and one stream, no more
        assert (
            "KV_myapp_processes" in subject
            or subject == "$KV.myapp_processes.>"
            or (
                subject.startswith(("$JS.API.STREAM.", "$JS.API.DIRECT.GET."))
                and ".myapp_history" in subject
            )
        ), subject
        assert not subject.endswith((".*", "API.>"))
    for bad in ("", "a.b", "a>", "*", None):
        with pytest.raises(ValueError, match="prefix must be"):
            nats_permissions(bad)  # type: ignore[arg-type]


# -- secrets never show -----------------------------------------------------------------------


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def shown(exc: BaseException) -> str:
    """Everything an exception (and its chain) shows: str, repr and args."""
    return "\n".join(f"{e}\n{e!r}\n{e.args!r}" for e in _chain(exc))


class Sentinels:
    """Secrets unique to this run, so finding one anywhere is a leak."""

    def __init__(self, workdir: Path) -> None:
        tag = secrets.token_hex(6)
        self.password = f"sentinelPW{tag}"
        self.token = f"sentinelTOK{tag}"
        self.nkey = new_nkey("user")
        text, self.creds_key = Keys.operator.user_creds(Keys.stranger, "sentinel")
        self.creds_path = str(write_creds(workdir / f"sentinel-{tag}.creds", text))

    @property
    def values(self) -> list[str]:
        return [self.password, self.token, self.nkey.seed, self.creds_key.seed, SENTINEL_PASSWORD]

    def assert_absent(self, text: str) -> None:
        for secret in self.values:
            assert secret not in text
        for secret in (self.nkey.seed, self.creds_key.seed):
            assert secret[:20] not in text  # not even a recognisable part of a seed


@pytest.mark.asyncio
async def test_sentinel_secrets_never_show_in_process(
    users_server: NatsServer,
    token_server: NatsServer,
    operator_server: NatsServer,
    workdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sentinels = Sentinels(workdir)
    refused = [
        {"servers": [with_credentials(users_server, f"app:{sentinels.password}")]},
        {
            "servers": [users_server.url],
            "connect_options": {"user": "app", "password": sentinels.password},
        },
        {"servers": [with_credentials(token_server, sentinels.token)]},
        {"servers": [token_server.url], "connect_options": {"token": sentinels.token}},
        {"servers": [users_server.url], "connect_options": {"nkeys_seed_str": sentinels.nkey.seed}},
        {
            "servers": [operator_server.url],
            "connect_options": {"user_credentials": sentinels.creds_path},
        },
    ]
    texts = []
    for config in refused:
        layer = NatsChannelLayer(prefix=unique_prefix(), **config)
        with pytest.raises(BrokerUnavailable) as failure:
            await layer.new_channel()
        assert failure.value.cause == "authentication"
        texts += [shown(failure.value), repr(layer), str(layer.counters)]
    # Accepted, then refused at run time: the transport's repr and PermissionDenied.
    accepted = NatsChannelLayer(
        servers=[with_credentials(users_server, f"sentinel:{SENTINEL_PASSWORD}")], prefix=PREFIX
    )
    channel = await accepted.new_channel()
    with pytest.raises(PermissionDenied) as denied:
        await accepted.group_add("room", channel)
    transport = accepted._routers[asyncio.get_running_loop()].transport
    texts += [shown(denied.value), repr(accepted), repr(transport), str(transport)]
    await accepted.close()
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) + str(record.exc_info) for record in caplog.records]
    sentinels.assert_absent("\n".join(texts))
    assert any("authentication failed" in text for text in texts)


DJANGO_SCRIPT = """
import traceback
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
for alias in sorted(settings.CHANNEL_LAYERS):
    try:
        async_to_sync(get_channel_layer(alias).group_send)("room", {"type": "x"})
        print(alias, "ok")
    except Exception:
        print(alias, "failed")
        traceback.print_exc()
"""


def test_sentinel_secrets_never_show_in_django_output(
    users_server: NatsServer,
    token_server: NatsServer,
    operator_server: NatsServer,
    workdir: Path,
) -> None:
    """``manage.py check`` and a ``shell -c`` doing group_send, with DEBUG logging to stderr."""
    sentinels = Sentinels(workdir)
    nats = "channels_neffos.NatsChannelLayer"
    layers = {
        "password_url": {"servers": [with_credentials(users_server, f"app:{sentinels.password}")]},
        "password_option": {
            "servers": [users_server.url],
            "connect_options": {"user": "app", "password": sentinels.password},
        },
        "token_url": {"servers": [with_credentials(token_server, sentinels.token)]},
        "nkey": {
            "servers": [users_server.url],
            "connect_options": {"nkeys_seed_str": sentinels.nkey.seed},
        },
        "creds": {
            "servers": [operator_server.url],
            "connect_options": {"user_credentials": sentinels.creds_path},
        },
        "right_password": {  # accepted: must work, and show nothing either
            "servers": [with_credentials(users_server, f"sentinel:{SENTINEL_PASSWORD}")],
            "prefix": PREFIX,
        },
    }
    project = workdir / f"project-{secrets.token_hex(4)}"
    project.mkdir()
    channel_layers = {
        alias: {"BACKEND": nats, "CONFIG": config} for alias, config in layers.items()
    }
    (project / "sentinel_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "not-a-sentinel"
            INSTALLED_APPS = ["channels"]
            CHANNEL_LAYERS = {channel_layers!r}
            LOGGING = {{
                "version": 1,
                "handlers": {{"stderr": {{"class": "logging.StreamHandler"}}}},
                "root": {{"handlers": ["stderr"], "level": "DEBUG"}},
            }}
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "sentinel_settings",
    }
    commands = [["check"], ["shell", "-c", DJANGO_SCRIPT]]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "django", *command],
            env=env,
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    check, shell = (stdout + stderr for stdout, stderr in outputs)
    assert runs[0].returncode == 0, check
    assert "System check identified no issues" in check
    for alias in ("password_url", "password_option", "token_url", "nkey", "creds"):
        assert f"{alias} failed" in shell
    assert "right_password ok" in shell
    assert shell.count("BrokerUnavailable: authentication failed with the broker at nats://") == 5
    sentinels.assert_absent(check + shell)
