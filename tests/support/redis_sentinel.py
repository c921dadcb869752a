"""A Redis Sentinel deployment for tests: one master, one replica and three sentinels.

:class:`RedisSentinelGroup` runs, on free ports of 127.0.0.1 and with nothing persisted, a master
and a replica (:class:`~channels_neffos.testing.brokers.RedisServer` processes, the replica set
up with ``REPLICAOF``) and three ``redis-server --sentinel`` processes monitoring them under
``master_name`` with a quorum of two. :meth:`~RedisSentinelGroup.start` returns once every
sentinel names the master, knows the replica (in sync, its ``INFO`` fresh) and both other
sentinels — the sentinels are introduced in their configuration files (``known-sentinel``,
``known-replica``), so nobody waits for hello messages — which is what a failover needs.

Failure detection is fast, and otherwise Sentinel's own timing applies, so what a test measures
is what a deployment with the same ``down-after-milliseconds`` would see:

* ``down_after_ms`` (default 1000): a master silent this long is subjectively down; with two
  sentinels agreeing it is objectively down and a failover starts.
* ``failover_timeout_ms`` (default 2000): a failed election is retried after twice this.
* Then Sentinel's fixed periods: the leader sees the promoted replica through ``INFO``, sent
  every second during a failover; the others learn the new master from hello messages
  (every 2 s) — clients asking every sentinel and trusting the newest ``config-epoch`` do not
  wait for that.

:meth:`~RedisSentinelGroup.kill_master` crashes the master (SIGKILL);
:meth:`~RedisSentinelGroup.failover` asks for a graceful one (``SENTINEL FAILOVER``: the old master
is demoted to a replica, and the sentinels close its clients' connections);
:meth:`~RedisSentinelGroup.wait_for_failover` returns the new master once every sentinel names it
and it says it is one. :meth:`~RedisSentinelGroup.hosts_entry` is the ``hosts`` entry for a layer.
"""

from __future__ import annotations

import secrets
import shutil
import time
from typing import Any

from channels_neffos.testing.brokers import (
    BrokerGroup,
    BrokerProcess,
    RedisServer,
    find_redis_server,
)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelProcess(BrokerProcess):
    """One ``redis-server --sentinel`` process; its configuration file is written at start."""

    scheme = "redis"

    def __init__(self, config_lines: list[str], port: int | None = None) -> None:
        super().__init__(port)
        self.config_lines = config_lines
        self.config_path = self.workdir / "sentinel.conf"

    def command(self) -> list[str]:
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.workdir}", *self.config_lines]
        self.config_path.write_text("\n".join(lines) + "\n")  # Sentinel rewrites it as it goes
        self.config_path.chmod(0o600)
        return [find_redis_server(), str(self.config_path), "--sentinel"]

    def command_reply(self, *args: str | int, password: str | None = None) -> Any:
        """Run one command on this sentinel and return the reply (raw, undecoded)."""
        import redis  # only the admin path needs the synchronous client

        client = redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5)
        try:
            return client.execute_command(*args)
        finally:
            client.close()


class RedisSentinelGroup(BrokerGroup):
    """A master, a replica and ``size`` sentinels (see the module docstring).

    ``password`` is required by the master and the replica (and used between them and by the
    sentinels); ``sentinel_password`` by the sentinels (their ``requirepass``).
    """

    def __init__(
        self,
        master_name: str = "mymaster",
        *,
        size: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 2000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.master_name = master_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.servers = [RedisServer(password=password), RedisServer(password=password)]
        #: The server that is master now (the first one, until a failover).
        self.master = self.servers[0]
        ids = [secrets.token_hex(20) for _ in range(size)]
        self._sentinels = [SentinelProcess([]) for _ in range(size)]
        quorum = size // 2 + 1
        for index, sentinel in enumerate(self._sentinels):
            lines = [
                f"sentinel myid {ids[index]}",
                f"sentinel monitor {master_name} 127.0.0.1 {self.master.port} {quorum}",
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                f"sentinel parallel-syncs {master_name} 1",
                f"sentinel known-replica {master_name} 127.0.0.1 {self.servers[1].port}",
            ]
            for other_index, other in enumerate(self._sentinels):
                if other is not sentinel:
                    lines.append(
                        f"sentinel known-sentinel {master_name} 127.0.0.1 {other.port} "
                        f"{ids[other_index]}"
                    )
            if password is not None:
                lines.append(f"sentinel auth-pass {master_name} {password}")
            if sentinel_password is not None:
                lines += [
                    f"requirepass {sentinel_password}",
                    f"sentinel sentinel-pass {sentinel_password}",
                ]
            sentinel.config_lines = lines

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses, as a layer's ``sentinels`` option takes them."""
        return [("127.0.0.1", sentinel.port) for sentinel in self._sentinels]

    @property
    def sentinel_processes(self) -> list[SentinelProcess]:
        return list(self._sentinels)

    @property
    def replica(self) -> RedisServer:
        """The server that is not the master now."""
        return next(server for server in self.servers if server is not self.master)

    def hosts_entry(self, **options: Any) -> dict[str, Any]:
        """The ``hosts`` entry for a layer: sentinels, master name, these passwords, ``options``."""
        entry: dict[str, Any] = {
            "sentinels": [list(address) for address in self.sentinels],  # JSON-safe for children
            "master_name": self.master_name,
        }
        if self.password is not None:
            entry["password"] = self.password
        if self.sentinel_password is not None:
            entry["sentinel_kwargs"] = {"password": self.sentinel_password}
        return {**entry, **options}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        for server in self.servers:
            server.start()
        for server in self.servers:
            # A replica's first sync at once, not after the default 5 s of waiting for others.
            server.admin_command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
            if self.password is not None:  # either may have to follow the other after a failover
                server.admin_command("CONFIG", "SET", "masterauth", self.password)
        self.replica.admin_command("REPLICAOF", "127.0.0.1", self.master.port)
        for sentinel in self._sentinels:
            sentinel.start()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the sentinels of {self.master_name!r} did not agree in {timeout}s; logs in "
                    + ", ".join(str(s.log_path) for s in [*self.servers, *self._sentinels])
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        """Every sentinel names the master, sees the replica in sync and both other sentinels."""
        if not self._replica_in_sync():
            return False
        for sentinel in self._sentinels:
            master = self._state(
                sentinel.command_reply(
                    "SENTINEL", "MASTER", self.master_name, password=self.sentinel_password
                )
            )
            if master.get("port") != str(self.master.port) or master.get("flags") != "master":
                return False
            if master.get("num-other-sentinels") != str(len(self._sentinels) - 1):
                return False
            replicas = sentinel.command_reply(
                "SENTINEL", "REPLICAS", self.master_name, password=self.sentinel_password
            )
            states = [self._state(replica) for replica in replicas]
            if not any(
                state.get("port") == str(self.replica.port)
                and state.get("flags") == "slave"
                and state.get("master-link-status") == "ok"
                for state in states
            ):
                return False
            peers = sentinel.command_reply(
                "SENTINEL", "SENTINELS", self.master_name, password=self.sentinel_password
            )
            if [self._state(peer).get("flags") for peer in peers] != ["sentinel"] * (
                len(self._sentinels) - 1
            ):
                return False
        return True

    def _replica_in_sync(self) -> bool:
        info = self.replica.admin_command("INFO", "replication")
        if info.get("master_link_status") != "up":
            return False
        master_offset = self.master.admin_command("INFO", "replication").get("master_repl_offset")
        return bool(info.get("slave_repl_offset") == master_offset)

    @staticmethod
    def _state(reply: Any) -> dict[str, str]:
        """A sentinel's ``[key, value, ...]`` reply (or a map) as a dict of strings."""
        items = (
            list(reply.items())
            if isinstance(reply, dict)
            else list(zip(reply[::2], reply[1::2], strict=True))
        )
        return {_text(key): _text(value) for key, value in items}

    def master_addresses(self) -> list[tuple[str, int] | None]:
        """What each running sentinel names as the master now (None: no answer)."""
        named: list[tuple[str, int] | None] = []
        for sentinel in self._sentinels:
            if not sentinel.running:
                continue
            try:
                reply = sentinel.command_reply(
                    "SENTINEL",
                    "GET-MASTER-ADDR-BY-NAME",
                    self.master_name,
                    password=self.sentinel_password,
                )
            except Exception:  # not answering: counts as not agreeing yet
                named.append(None)
                continue
            named.append((reply[0].decode(), int(reply[1])) if reply else None)
        return named

    def kill_master(self) -> RedisServer:
        """Crash the master (SIGKILL); returns it (it stays down)."""
        killed = self.master
        killed.kill()
        return killed

    def failover(self) -> None:
        """Ask for a graceful failover (``SENTINEL FAILOVER``); :meth:`wait_for_failover` next."""
        self._sentinels[0].command_reply(
            "SENTINEL", "FAILOVER", self.master_name, password=self.sentinel_password
        )

    def wait_for_failover(self, timeout: float = 30.0) -> RedisServer:
        """Wait until every sentinel names another master, which says so itself; return it."""
        old = self.master
        new = self.replica
        deadline = time.monotonic() + timeout
        while True:
            named = self.master_addresses()
            if named and all(address == ("127.0.0.1", new.port) for address in named):
                role = new.admin_command("ROLE")
                if role and role[0] == b"master":
                    self.master = new
                    return new
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no failover from {old.port} to {new.port} within {timeout}s: the sentinels "
                    f"name {named}; logs in {', '.join(str(s.log_path) for s in self._sentinels)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        for process in [*self._sentinels, *self.servers]:
            process.stop()
            shutil.rmtree(process.workdir, ignore_errors=True)
