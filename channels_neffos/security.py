"""Least-privilege broker permissions for a layer, generated from its ``prefix``.

Redis (:func:`redis_acl_rules`, :func:`redis_acl`): a layer with prefix ``P`` touches only

* the pub/sub channels ``P:*`` — ``PUBLISH`` and ``SUBSCRIBE``/``UNSUBSCRIBE`` (groups, replies,
  channels of other processes) and ``PSUBSCRIBE``/``PUNSUBSCRIBE`` of its own process pattern
  ``P:<pid>:*``;
* the keys ``P:q:*`` — worker-channel lists: ``EVAL`` of the push script (a script runs with the
  caller's ACL, so ``LLEN``, ``LPUSH`` and ``EXPIRE`` too), ``BRPOP``, and ``SCAN`` + ``UNLINK``
  for ``flush()``;
* the key ``P:p:processes`` — presence's registry of live processes, a sorted set its scripts
  keep with ``TIME``, ``ZADD``, ``ZRANGEBYSCORE``, ``ZREMRANGEBYSCORE``, ``ZREM`` and ``PEXPIRE``;
* the keys ``P:h:*`` — history groups' streams and positions (``{P:h:*`` on a cluster with
  classic pub/sub, ``P:{*}:h:*`` with sharded pub/sub), kept by scripts with ``HGET``,
  ``HMGET``, ``HSET``, ``HINCRBY``, ``DEL``, ``XADD``, ``XRANGE``, ``XREVRANGE``, ``XTRIM``,
  ``TIME`` and ``PEXPIRE``;
* ``PING`` (sent once per new connection, so a missing password fails at once). redis-py's
  handshake adds ``AUTH``, which every user may send, and — from Redis 7.2 — ``CLIENT SETINFO``,
  whose refusal redis-py ignores (add ``+client|setinfo`` to keep it out of ``ACL LOG``), and
  ``SELECT`` if the URL names a database other than 0 (add ``+select`` then).

One limit of Redis ACLs: a ``PSUBSCRIBE`` pattern is checked *literally* against the user's
channel patterns, so ``&P:*`` does not allow ``PSUBSCRIBE P:<pid>:*`` (the pid is random per
process). The rules therefore grant ``PSUBSCRIBE`` alone on every pattern, in a selector
``(+psubscribe &*)``: the user can publish and subscribe only under ``P:``, and reach keys only
under ``P:q:``, but can pattern-subscribe to (read) other pub/sub traffic on the same server.
Give tenants that must not see each other's messages their own Redis server.

NATS (:func:`nats_permissions`): a layer with prefix ``P`` publishes and subscribes only under
``P.>`` — its process subjects ``P.<pid>.>`` (channels, reply inboxes ``P.<pid>.r.…``), groups
``P.g.…`` and worker channels ``P.q.…`` (queue subscriptions, queue group = subject). Nothing
else: no ``_INBOX.>`` (asks reply to the asker's own ``P.<pid>.r.…``, and nats-py's ``flush()`` is
a PING, no subject), and the server's "no responders" status goes to that reply subject, which
needs no permission of the publisher. Unlike Redis, NATS checks a wildcard subscription against
the user's wildcard permissions properly, so the user sees nothing outside ``P.>``.
"""

from __future__ import annotations

import re

from .transports.nats import escape_token

__all__ = ["nats_permissions", "redis_acl", "redis_acl_rules"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")  # as the layers accept: no glob characters
_USER_RE = re.compile(r"[^\s()#>]+")

#: Commands a Redis layer sends on keys under its prefix, on one server as on a cluster.
_REDIS_KEY_COMMANDS = (
    # worker channels: lists, pushed by a script
    "eval",
    "llen",
    "lpush",
    "expire",
    "brpop",
    "scan",
    "unlink",
    # presence: the registry of live processes, a sorted set (scripts, on the server's clock)
    "time",
    "zadd",
    "zrangebyscore",
    "zremrangebyscore",
    "zrem",
    "pexpire",
    # history groups: a stream and a hash per group, written and read by scripts
    "hget",
    "hmget",
    "hset",
    "hincrby",
    "del",
    "xadd",
    "xrange",
    "xrevrange",
    "xtrim",
)

#: Commands a Redis layer sends on channels or keys under its prefix (see the module docstring).
REDIS_COMMANDS = (
    "ping",
    "publish",
    "subscribe",
    "unsubscribe",
    "punsubscribe",
    *_REDIS_KEY_COMMANDS,
    # Sentinel: each connection checks that its server is the master (ROLE) before using it
    "role",
)

#: What a layer on a Redis Cluster with sharded pub/sub sends: shard channels instead of
#: pub/sub channels and patterns, the slot map, whether the server has sharded pub/sub
#: (``COMMAND INFO``), and what redis-py's cluster client asks of each node when it starts
#: (the command table, to find keys in commands).
REDIS_CLUSTER_COMMANDS = (
    "ping",
    "spublish",
    "ssubscribe",
    "sunsubscribe",
    *_REDIS_KEY_COMMANDS,
    "cluster|slots",
    "command",
)


def redis_acl_rules(prefix: str, *, cluster: bool = False) -> list[str]:
    """The ``ACL SETUSER`` rules (one argument each) for a Redis layer with ``prefix``;
    ``cluster=True`` for a layer on a Redis Cluster with sharded pub/sub (the default there).

    Usable as ``ACL SETUSER <user> reset on ><password> <rules...>``; :func:`redis_acl` writes
    the same as one ``aclfile`` / ``redis.conf`` line.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"prefix must be 1-50 characters from A-Z, a-z, 0-9, '_' and '-', got {prefix!r}"
        )
    # History keys: P:h:<group> (one server), {P:h:<group>} (classic cluster: the whole name is
    # the hash tag), P:{<tag>}:h:<group> (sharded cluster), each with its hash ...:m.
    history = [f"~{prefix}:{{*}}:h:*"] if cluster else [f"~{prefix}:h:*", f"~{{{prefix}:h:*"]
    rules = ["resetkeys", f"~{prefix}:q:*", f"~{prefix}:p:*", *history]
    rules += ["resetchannels", f"&{prefix}:*"]
    rules.append("-@all")
    if cluster:  # no pattern subscription, so no selector that opens every channel to it
        return [*rules, *(f"+{command}" for command in REDIS_CLUSTER_COMMANDS)]
    return [*rules, *(f"+{command}" for command in REDIS_COMMANDS), "(+psubscribe", "&*)"]


def redis_acl(
    prefix: str, user: str = "channels", password: str = "<password>", *, cluster: bool = False
) -> str:
    """A ``user`` line for an ACL file (or ``redis.conf``) granting what :func:`redis_acl_rules`
    lists, e.g.::

        user channels reset on ><password> resetkeys ~myapp:q:* ~myapp:p:* ~myapp:h:*
        ~{myapp:h:* resetchannels &myapp:* -@all +ping +publish +subscribe +unsubscribe
        +punsubscribe +eval +llen +lpush +expire +brpop +scan +unlink +time +zadd
        +zrangebyscore +zremrangebyscore +zrem +pexpire +hget +hmget +hset +hincrby +del +xadd
        +xrange +xrevrange +xtrim +role (+psubscribe &*)

    (on one line). Replace ``<password>``, or pass it, and keep the file private.
    """
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise ValueError(f"not a usable Redis user name: {user!r}")
    if not isinstance(password, str) or not password or any(c.isspace() for c in password):
        raise ValueError("the password must be a non-empty string without spaces")
    rules = redis_acl_rules(prefix, cluster=cluster)
    return " ".join(["user", user, "reset", "on", f">{password}", *rules])


def nats_permissions(prefix: str) -> dict[str, dict[str, list[str]]]:
    """The subject permissions a NATS layer with ``prefix`` needs, and nothing more::

        {"publish": {"allow": ["P.>", <presence>, <history>]}, "subscribe": {"allow": ["P.>"]}}

    where ``<presence>`` is the JetStream API of the one key-value bucket presence keeps
    (``$JS.API.STREAM.CREATE``, ``INFO`` and ``PURGE`` of ``KV_P_processes``, and
    ``$KV.P_processes.>``) and ``<history>`` that of the one stream history groups keep
    (``$JS.API.STREAM.CREATE``, ``UPDATE`` and ``INFO`` of ``P_history``, and
    ``$JS.API.DIRECT.GET.P_history`` and ``.>``), which nats-py answers on ``P._INBOX.…`` (inside
    ``P.>``). Presence's are not needed with ``presence=False``, history's without the
    ``history`` option. Use it
    as the ``permissions`` of a user in the server's ``authorization`` block (NATS config is a
    superset of JSON, so ``json.dumps`` of it can be pasted), or, renamed ``pub``/``sub``, in a
    user JWT (``nsc edit user --allow-pubsub 'P.>'``). A prefix starting with ``_`` appears as
    ``__…`` in subjects (see :mod:`channels_neffos.transports.nats`), and so here.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"prefix must be 1-50 characters from A-Z, a-z, 0-9, '_' and '-', got {prefix!r}"
        )
    subjects = [f"{escape_token(prefix)}.>"]
    # Presence: the JetStream key-value bucket of live processes (nats_registry), and nothing
    # else of JetStream; its API answers under the prefix (the transport's inbox_prefix).
    bucket = f"{prefix}_processes"
    stream = f"KV_{bucket}"
    presence = [
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$KV.{bucket}.>",
    ]
    # History groups: one stream, its batched direct gets (nats_history).
    history_stream = f"{prefix}_history"
    history = [
        f"$JS.API.STREAM.CREATE.{history_stream}",
        f"$JS.API.STREAM.UPDATE.{history_stream}",
        f"$JS.API.STREAM.INFO.{history_stream}",
        f"$JS.API.DIRECT.GET.{history_stream}",
        f"$JS.API.DIRECT.GET.{history_stream}.>",  # a group's last batch, by its subject
    ]
    publish = [*subjects, *presence, *history]
    return {"publish": {"allow": publish}, "subscribe": {"allow": list(subjects)}}
