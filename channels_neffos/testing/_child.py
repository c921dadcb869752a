"""A channel-layer peer in a separate OS process, for the conformance suite's cross-process cases.

Usage: ``python -m channels_neffos.testing._child '<spec json>' <operation> <args...>``

* ``member <group> <report_channel>`` — join ``group`` with a new channel, report ``ready``,
  then forward the first group message it receives to ``report_channel`` and exit.
* ``responder <report_channel>`` — report a new channel as ``ready``, answer the first ask that
  arrives on it with ``{"echo": <its "n">, "pid": <this OS process id>}`` and exit.
* ``send <channel> '<message json>'`` / ``group_send <group> '<message json>'`` — send and exit.
* ``members <group> <count> <report_channel>`` — add ``count`` new channels to ``group``, report
  them (``ready``, ``channels``), then stay until a message arrives on the first of them (or the
  process is killed), and close the layer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from django.utils.module_loading import import_string


async def main(spec: dict[str, object], operation: str, args: list[str]) -> None:
    layer = import_string(str(spec["backend"]))(**dict(spec["config"]))  # type: ignore[call-overload]
    if operation == "member":
        group, report_channel = args
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.send(report_channel, {"type": "ready", "channel": channel})
        message = await asyncio.wait_for(layer.receive(channel), 30)
        await layer.send(report_channel, {"type": "forwarded", "message": message})
    elif operation == "responder":
        (report_channel,) = args
        channel = await layer.new_channel()
        await layer.send(report_channel, {"type": "ready", "channel": channel})
        request = await asyncio.wait_for(layer.receive(channel), 30)
        await layer.reply(request, {"echo": request["n"], "pid": os.getpid()})
    elif operation == "members":
        group, count, report_channel = args
        channels = [await layer.new_channel() for _ in range(int(count))]
        for channel in channels:
            await layer.group_add(group, channel)
        await layer.send(report_channel, {"type": "ready", "channels": channels})
        await asyncio.wait_for(layer.receive(channels[0]), 60)
    elif operation == "send":
        await layer.send(args[0], json.loads(args[1]))
    elif operation == "group_send":
        await layer.group_send(args[0], json.loads(args[1]))
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]))
