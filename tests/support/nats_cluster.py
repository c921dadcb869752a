"""A NATS cluster for tests: three routed ``nats-server`` processes with clustered JetStream.

Each node is a :class:`~channels_neffos.testing.brokers.NatsServer` on free ports of 127.0.0.1
(a client port, a cluster port and a monitoring port) with its own ``server_name`` and JetStream
store directory; every node lists every cluster port under ``routes``, so any node that starts
(or restarts) joins the others. :meth:`NatsCluster.start` and :meth:`NatsCluster.restart` return
only once the cluster is whole:

* every running node has a route to every other running node (``/routez``, by remote server
  name: nats-server opens a pool of several route connections per pair), and
* every running node knows the JetStream meta leader and it lists all running nodes as current
  (``/jsz``) — before that, creating a stream (the presence bucket) fails with "JetStream system
  temporarily unavailable".

A node keeps its ports and store directory across :meth:`NatsCluster.kill` /
:meth:`NatsCluster.restart`, as a crashed server would. Clients learn the other nodes from the
server's INFO (``connect_urls``), which lists each node's client port on 127.0.0.1.

What JetStream in this cluster gives presence (see ``transports/nats_registry.py``): the
registry's bucket is created with three replicas when the server is clustered, so it keeps
answering with one node killed — once a new stream leader is elected, if the killed node led it
(4-9 s, nats-server's election timeout).

:meth:`NatsCluster.freeze` stops a node with SIGSTOP instead: a hung server or a lost host,
which closes nothing, so clients only notice by unanswered pings.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import time
import urllib.request
from typing import Any

from channels_neffos.testing.brokers import BrokerGroup, NatsServer, free_port


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (``free_port`` alone could hand the same one twice)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


class NatsClusterNode(NatsServer):
    """One node of a :class:`NatsCluster`: a JetStream ``nats-server`` routed to its peers."""

    def __init__(
        self,
        name: str,
        cluster_name: str,
        port: int,
        cluster_port: int,
        monitor_port: int,
        route_ports: list[int],
    ) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{route}" for route in route_ports)
        config = "\n".join(
            [
                f"server_name: {name}",
                f"http: 127.0.0.1:{monitor_port}",
                "cluster {",
                f"  name: {cluster_name}",
                f"  listen: 127.0.0.1:{cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        )
        super().__init__(port, config=config, jetstream=True)
        self.name = name
        self.cluster_port = cluster_port
        self.monitor_port = monitor_port

    def signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """The JSON of a monitoring endpoint (``routez``, ``jsz``, ``varz``, ``connz`` ...)."""
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def routed_to(self) -> set[str]:
        """The server names this node has a route to."""
        return {route["remote_name"] for route in self.monitor("routez").get("routes") or []}

    def meta_leader(self) -> str:
        """The JetStream meta leader this node follows (``""`` while there is none)."""
        meta = self.monitor("jsz").get("meta_cluster") or {}
        return str(meta.get("leader") or "")

    def current_peers(self) -> set[str]:
        """The meta group's peers this node sees as current (meaningful on the leader only,
        which tracks its followers), itself included."""
        meta = self.monitor("jsz").get("meta_cluster") or {}
        peers = {peer["name"] for peer in meta.get("replicas") or [] if peer.get("current")}
        return peers | {self.name}


class NatsCluster(BrokerGroup):
    """``size`` routed nats-server nodes with clustered JetStream, on free ports of 127.0.0.1.

    ``urls`` lists every node's client URL; ``nodes[i]`` is a :class:`NatsClusterNode`
    (``.url``, ``.name``, ``.port``, ``.monitor(...)``). ``kill(i)`` stops node ``i`` with
    SIGKILL, ``restart(i)`` starts it again (same ports and store) and waits until the cluster is
    whole. A context manager: starts on enter, stops and deletes everything on exit.
    """

    def __init__(self, size: int = 3) -> None:
        if size < 2:
            raise ValueError("a cluster needs at least two nodes")
        ports = _free_ports(3 * size)
        client_ports, cluster_ports, monitor_ports = (
            ports[0:size],
            ports[size : 2 * size],
            ports[2 * size :],
        )
        cluster_name = "c" + secrets.token_hex(4)
        self.nodes = [
            NatsClusterNode(
                f"n{index}",
                cluster_name,
                client_ports[index],
                cluster_ports[index],
                monitor_ports[index],
                cluster_ports,
            )
            for index in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_until_whole(timeout)

    def wait_until_whole(self, timeout: float = 30.0) -> None:
        """Return once every running node is routed to every other and JetStream is ready."""
        deadline = time.monotonic() + timeout
        while True:
            running = [node for node in self.nodes if node.running]
            try:
                if self._whole(running):
                    return
            except OSError:  # a monitoring port is not listening yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the NATS cluster {self.urls} did not form in {timeout}s: "
                    f"{self._describe(running)}"
                )
            time.sleep(0.05)

    @staticmethod
    def _whole(running: list[NatsClusterNode]) -> bool:
        names = {node.name for node in running}
        if not all(node.routed_to() >= names - {node.name} for node in running):
            return False
        leaders = {node.meta_leader() for node in running}
        if len(leaders) != 1 or not leaders <= names:
            return False
        (leader,) = (node for node in running if node.name in leaders)
        return leader.current_peers() >= names

    @staticmethod
    def _describe(running: list[NatsClusterNode]) -> str:
        status = []
        for node in running:
            try:
                routes, leader = sorted(node.routed_to()), node.meta_leader() or "none"
            except OSError as exc:
                status.append(f"{node.name}: {exc}")
            else:
                status.append(f"{node.name}: routes to {routes}, meta leader {leader}")
        return "; ".join(status)

    def kill(self, index: int) -> None:
        """Stop node ``index`` abruptly (SIGKILL): its sockets close, its clients reconnect."""
        self.nodes[index].kill()

    def freeze(self, index: int) -> None:
        """Stop node ``index`` without closing anything (SIGSTOP): a hung server or a lost
        host, whose TCP connections look open until a ping goes unanswered."""
        self.nodes[index].signal(signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        """Let a frozen node run again (SIGCONT)."""
        self.nodes[index].signal(signal.SIGCONT)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start node ``index`` again (after :meth:`kill`) and wait until the cluster is whole."""
        self.nodes[index].restart()
        self.wait_until_whole(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)  # a frozen node could not act on SIGTERM
            node.stop()
            shutil.rmtree(node.workdir, ignore_errors=True)
