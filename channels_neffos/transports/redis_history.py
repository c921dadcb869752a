"""A group's history on Redis: a stream and a small hash, written by one script per batch.

For a history group with subject ``S`` (``P:h:<group>``; on a sharded cluster with its hash tag,
so that all three names share one slot) Redis keeps

* ``S`` — a **stream** of the group's messages: entry id ``<offset>-0``, fields ``p`` (the
  encoded envelope, sealed if the layer encrypts) and ``t`` (the server's clock, ms);
* ``S:m`` — a **hash**, the group's position: ``e`` its epoch and ``o`` its latest offset.

:data:`APPEND` runs as one script, so nothing can come between its steps: it takes the epoch
(or, if the hash is gone — never written, expired, or lost with a restarted server — makes the
caller's candidate the new epoch and deletes any stream left of the old one), adds the batch's
size to the offset, appends each message, trims the stream to ``size`` entries and to what is
younger than ``ttl``, sets both keys to expire (the stream ``ttl`` after its last message, the
hash ``meta_ttl`` after it), and publishes the batch to ``S``, positioned
(:func:`~channels_neffos.transports.base.pack_positioned`). Redis runs one script at a time and
delivers a connection's publishes in order, so every subscriber sees a group's batches in offset
order.

:data:`READ` returns the epoch, the latest offset and the entries after a given offset (or the
last ones), leaving out what is older than ``ttl`` even if no append has trimmed it yet.

A stream lost while its hash lives on (deleted by hand, evicted) keeps the epoch: the offsets go
on, and a reader asking for what was lost sees that the oldest kept offset is past what it
asked for (:class:`~channels_neffos.GroupHistory` ``recovered=False``) — the loss is never
silent either way.
"""

from __future__ import annotations

from typing import Any

from .base import HistoryLimits, HistorySlice

#: KEYS: stream, meta. ARGV: channel, publish command, epoch candidate, size, ttl (ms),
#: meta ttl (ms), payloads... Returns {epoch, first offset}.
APPEND = """
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end
local count = #ARGV - 6
local first = redis.call('HINCRBY', meta, 'o', count) - count + 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local size, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local parts = {epoch, ':', first, ':'}
for i = 1, count do
  local payload = ARGV[6 + i]
  redis.call('XADD', stream, 'MAXLEN', size, (first + i - 1) .. '-0', 'p', payload, 't', now)
  parts[#parts + 1] = #payload .. ':'
  parts[#parts + 1] = payload
end
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
local keep = nil
for _, entry in ipairs(head) do
  if tonumber(entry[2][4]) >= now - ttl then keep = entry[1] break end
end
if keep == nil then keep = (tonumber(string.sub(head[#head][1], 1, -3)) + 1) .. '-0' end
if keep ~= head[1][1] then redis.call('XTRIM', stream, 'MINID', keep) end
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, tonumber(ARGV[6]))
redis.call(ARGV[2], ARGV[1], table.concat(parts))
return {epoch, first}
"""

#: KEYS: stream, meta. ARGV: since (-1: none), limit (0: none), ttl (ms).
#: Returns {epoch or false, latest offset, {offset, payload, offset, payload...}}.
READ = """
local stream, meta = KEYS[1], KEYS[2]
local position = redis.call('HMGET', meta, 'e', 'o')
if not position[1] then return {false, 0, {}} end
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local entries
if since >= 0 then
  if limit > 0 then
    entries = redis.call('XRANGE', stream, (since + 1) .. '-0', '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', stream, (since + 1) .. '-0', '+')
  end
elseif limit > 0 then
  entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', limit)
  local n = #entries
  for i = 1, math.floor(n / 2) do
    entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
  end
else
  entries = redis.call('XRANGE', stream, '-', '+')
end
local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - tonumber(ARGV[3])
local flat = {}
for _, entry in ipairs(entries) do
  if tonumber(entry[2][4]) >= cutoff then
    flat[#flat + 1] = string.sub(entry[1], 1, -3)
    flat[#flat + 1] = entry[2][2]
  end
end
return {position[1], tonumber(position[2]), flat}
"""


def meta_key(stream: str) -> str:
    """The name of the position hash of the history stream ``stream``."""
    return f"{stream}:m"


def append_args(
    stream: str,
    channel: str,
    publish: bytes,
    payloads: list[bytes],
    limits: HistoryLimits,
    epoch: str,
) -> list[bytes | str | int]:
    """The arguments of ``EVAL`` :data:`APPEND` for a batch, after the script itself:
    ``stream`` is the stream's key (the hash's is :func:`meta_key`), ``channel`` where the
    batch is published, with ``publish`` (``PUBLISH`` or ``SPUBLISH``)."""
    return [
        2,
        stream,
        meta_key(stream),
        channel,
        publish,
        epoch,
        limits.size,
        _ms(limits.ttl),
        _ms(limits.meta_ttl),
        *payloads,
    ]


def read_args(
    stream: str, since: int | None, limit: int | None, limits: HistoryLimits
) -> list[bytes | str | int]:
    """The arguments of ``EVAL`` :data:`READ`, after the script itself."""
    return [
        2,
        stream,
        meta_key(stream),
        -1 if since is None else since,
        limit or 0,
        _ms(limits.ttl),
    ]


def cluster_stream_key(subject: str) -> str:
    """The stream key of a history subject on a cluster with classic pub/sub: the whole name as
    a hash tag, so that the stream and its hash share a slot (the channel is not a key there)."""
    return f"{{{subject}}}"


def appended(reply: Any) -> tuple[str, int]:
    epoch, first = reply
    return (epoch.decode() if isinstance(epoch, bytes) else str(epoch)), int(first)


def read_slice(reply: Any) -> HistorySlice:
    epoch, offset, flat = reply
    if not epoch:
        return HistorySlice(None, 0, [])
    entries = [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]
    return HistorySlice(
        epoch.decode() if isinstance(epoch, bytes) else str(epoch), int(offset), entries
    )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
