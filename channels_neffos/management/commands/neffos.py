"""``manage.py neffos``: see and poke the channel layers from a shell or a probe.

Subcommands (each takes ``--layer ALIAS``, default: every channels_neffos alias of
``CHANNEL_LAYERS``; ``--json`` prints one JSON document instead of text):

``status``
    per layer: whether the broker is reachable and the round trip through it; every live
    instance (process) of its prefix with its host, uptime, connection, channels, queued
    messages, groups and their sizes, neffos WebSocket connections per namespace and room, and
    counters (drops by reason, reconnects, and the namespaces' events such as
    ``slow_client_closed``). Instances are listed through presence: a process is listed once it
    holds a group member. Exit status 1 if a broker is unreachable.
``ping``
    exit status 0 if every broker answers a round trip within ``--timeout`` seconds, else 1 —
    for health checks and readiness probes. Prints the round trip.
``send CHANNEL MESSAGE`` / ``group-send GROUP MESSAGE``
    send a JSON object (with its ``"type"``) from the shell, for debugging.
``drain --pid PID [--pid PID ...]``
    drain server processes (daphne, uvicorn) of this host: send each SIGTERM — its neffos
    clients are closed over ``NEFFOS_DRAIN_WINDOW`` and it exits by itself (see
    ``docs/recovery.rst``) — and wait until every one has exited (``--timeout``, default 60 s;
    exit status 1 if one has not). Needs no channel layer.

Each run connects as a short-lived process of the layer and closes it before exiting; it never
appears in its own listing. Nothing it prints shows a password (addresses are masked).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from argparse import ArgumentParser
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...channel_layer import NeffosChannelLayer
from ...exceptions import BrokerUnavailable, PresenceUnavailable
from ...multi import MultiChannelLayer
from ...stats import ProcessStats

#: What a subcommand returns: its report (printed with --json) and why it failed, if it did.
_Outcome = tuple[Any, "str | None"]
#: How many of each instance's largest groups the text output names.
_SHOWN_GROUPS = 5


class Command(BaseCommand):  # type: ignore[misc]
    help = "Status, health check and debugging sends for channels_neffos layers."

    def add_arguments(self, parser: ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        for name, text in (
            ("status", "each layer's broker, live instances, groups and counters"),
            ("ping", "exit 0 if every broker answers within --timeout"),
            ("send", "send a JSON message to a channel"),
            ("group-send", "send a JSON message to a group"),
        ):
            sub = commands.add_parser(name, help=text)
            sub.add_argument("--layer", help="a CHANNEL_LAYERS alias (default: all of ours)")
            sub.add_argument("--json", action="store_true", help="print JSON")
            sub.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
            if name in ("send", "group-send"):
                sub.add_argument("target", help="the channel" if name == "send" else "the group")
                sub.add_argument("message", help='a JSON object, e.g. \'{"type": "chat.hello"}\'')

        drain = commands.add_parser("drain", help="SIGTERM server processes; wait for their exit")
        drain.add_argument("--pid", type=int, action="append", required=True, help="repeatable")
        drain.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
        drain.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "drain":
            self._drain(options)
            return
        aliases = self._aliases(options["layer"])
        handler = {
            "status": self._status,
            "ping": self._ping,
            "send": self._send,
            "group-send": self._send,
        }[options["subcommand"]]
        report, failure = asyncio.run(handler(aliases, options))
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        if failure is not None:
            raise CommandError(failure)

    def _drain(self, options: dict[str, Any]) -> None:
        pids: list[int] = options["pid"]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                raise CommandError(f"no process {pid}") from None
            except PermissionError:
                raise CommandError(
                    f"not allowed to signal process {pid} (run as its user)"
                ) from None
        started = time.monotonic()
        running = list(pids)
        while running and time.monotonic() - started < options["timeout"]:
            time.sleep(0.1)
            running = [pid for pid in running if _alive(pid)]
        elapsed = time.monotonic() - started
        drained = [pid for pid in pids if pid not in running]
        if options["json"]:
            report = {"drained": drained, "running": running, "seconds": round(elapsed, 3)}
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            for pid in drained:
                self.stdout.write(f"{pid}: drained and exited")
        if running:
            raise CommandError(
                f"still running after {options['timeout']:g} s: {running} (a drain is bounded "
                f"by NEFFOS_DRAIN_TIMEOUT; is NEFFOS_DRAIN off, or is it not a server process?)"
            )

    # -- which layers --------------------------------------------------------------------------

    def _aliases(self, alias: str | None) -> list[str]:
        configured = getattr(settings, "CHANNEL_LAYERS", {}) or {}
        ours = [
            name
            for name, entry in configured.items()
            if str(entry.get("BACKEND", "")).startswith("channels_neffos")
        ]
        if alias is not None:
            if alias not in configured:
                raise CommandError(f"CHANNEL_LAYERS has no alias {alias!r}")
            if alias not in ours:
                raise CommandError(f"CHANNEL_LAYERS[{alias!r}] is not a channels_neffos layer")
            return [alias]
        if not ours:
            raise CommandError("CHANNEL_LAYERS has no channels_neffos layer")
        return ours

    @staticmethod
    def _layers(alias: str) -> list[NeffosChannelLayer]:
        layer = get_channel_layer(alias)
        if isinstance(layer, MultiChannelLayer):
            return list(layer.children)
        return [layer]

    # -- subcommands ---------------------------------------------------------------------------

    async def _status(self, aliases: list[str], options: dict[str, Any]) -> _Outcome:
        report: dict[str, list[dict[str, Any]]] = {}
        ok = True
        for alias in aliases:
            report[alias] = []
            for layer in self._layers(alias):
                entry = await self._layer_status(layer, options["timeout"])
                ok = ok and entry["reachable"]
                report[alias].append(entry)
                if not options["json"]:
                    self._print_status(alias, entry)
        return report, None if ok else "a broker is unreachable"

    async def _layer_status(self, layer: NeffosChannelLayer, timeout: float) -> dict[str, Any]:
        stats = layer.stats()
        entry: dict[str, Any] = {
            "backend": stats.backend,
            "broker": stats.broker,
            "prefix": stats.prefix,
            "reachable": False,
        }
        try:
            entry["round_trip_ms"] = round(await layer.ping(timeout) * 1000, 3)
            entry["reachable"] = True
            own_pid = layer.stats().processes[0].pid
            instances = [i for i in await layer.instances() if i.pid != own_pid]
            entry["instances"] = [instance.to_dict() for instance in instances]
        except PresenceUnavailable as exc:
            entry["instances_unavailable"] = str(exc)
        except BrokerUnavailable as exc:
            entry["error"] = str(exc)
        finally:
            await layer.close()
        return entry

    def _print_status(self, alias: str, entry: dict[str, Any]) -> None:
        write = self.stdout.write
        write(f"{alias}: {entry['backend']} on {entry['broker']}, prefix {entry['prefix']!r}")
        if not entry["reachable"]:
            write(self.style.ERROR(f"  broker UNREACHABLE: {entry.get('error')}"))
            return
        write(f"  broker reachable, round trip {entry['round_trip_ms']:.2f} ms")
        if "instances_unavailable" in entry:
            write(f"  instances: unknown ({entry['instances_unavailable']})")
            return
        instances = [ProcessStats.from_dict(data) for data in entry["instances"]]
        write(f"  instances: {len(instances)} live")
        for instance in instances:
            state = "connected" if instance.connected else f"DOWN for {instance.down_for:.0f} s"
            write(
                f"    {instance.pid}  {instance.host}:{instance.os_pid}  "
                f"up {_duration(instance.uptime)}  {state}  channels {instance.channels}  "
                f"queued {instance.queued}  groups {instance.groups} "
                f"({instance.members} members)"
            )
            if instance.connections:
                per_namespace = sorted(instance.connections.items())
                text = ", ".join(f"{name} {count}" for name, count in per_namespace)
                rooms = ", ".join(f"{name} ({size})" for name, size in instance.rooms.items())
                write(f"      connections: {text}" + (f"; rooms: {rooms}" if rooms else ""))
            if instance.largest_groups:
                shown = list(instance.largest_groups.items())[:_SHOWN_GROUPS]
                more = instance.groups - len(shown)
                groups = ", ".join(f"{name} ({size})" for name, size in shown)
                write(f"      groups: {groups}" + (f", and {more} more" if more > 0 else ""))
            counted = {name: count for name, count in instance.counters.items() if count}
            counted.update({n: c for n, c in instance.namespace_events.items() if c})
            if counted:
                write(
                    "      counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counted.items()))
                )

    async def _ping(self, aliases: list[str], options: dict[str, Any]) -> _Outcome:
        report: dict[str, list[dict[str, Any]]] = {}
        ok = True
        for alias in aliases:
            report[alias] = []
            for layer in self._layers(alias):
                entry: dict[str, Any] = {"broker": layer.stats().broker}
                try:
                    entry["round_trip_ms"] = round(await layer.ping(options["timeout"]) * 1000, 3)
                except BrokerUnavailable as exc:
                    entry["error"] = str(exc)
                    ok = False
                finally:
                    await layer.close()
                report[alias].append(entry)
                if not options["json"]:
                    if "error" in entry:
                        self.stdout.write(self.style.ERROR(f"{alias}: {entry['error']}"))
                    else:
                        self.stdout.write(
                            f"{alias}: {entry['broker']} round trip {entry['round_trip_ms']:.2f} ms"
                        )
        return report, None if ok else "a broker did not answer in time"

    async def _send(self, aliases: list[str], options: dict[str, Any]) -> _Outcome:
        if len(aliases) != 1:
            raise CommandError(f"choose the layer with --layer (one of {', '.join(aliases)})")
        try:
            message = json.loads(options["message"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"MESSAGE is not JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise CommandError('MESSAGE must be a JSON object with a "type", e.g. {"type": "x"}')
        layer = get_channel_layer(aliases[0])
        started = time.monotonic()
        try:
            if options["subcommand"] == "send":
                await layer.send(options["target"], message)
            else:
                await layer.group_send(options["target"], message)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except BrokerUnavailable as exc:
            raise CommandError(str(exc)) from None
        finally:
            await layer.close()  # what was sent leaves first
        took = round((time.monotonic() - started) * 1000, 3)
        report = {"sent": options["target"], "milliseconds": took}
        if not options["json"]:
            self.stdout.write(f"sent to {options['target']} in {took:.1f} ms")
        return report, None


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return f"{days}d {hour}h"
    if hours:
        return f"{hour}h {minute}m"
    return f"{minute}m {second}s" if minutes else f"{second}s"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True
