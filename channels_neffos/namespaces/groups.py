"""How neffos scopes map to Channels groups.

A connection to namespace ``N`` is in group ``ns.N``; a connection in room ``R`` of ``N`` is also in
``ns.N.r.R``. Namespace and room names in neffos are any strings, while Channels group names are
ASCII letters, digits, ``-``, ``_`` and ``.`` under 100 characters; so a name is used as it is
only when it consists of letters, digits, ``-`` and ``_`` (no ``.``, which would make
``ns.a.r.b`` ambiguous) and the group name stays under the limit. Anything else is hashed into
``nsh.<sha256 prefix>`` — a different prefix, so hashed and readable names never collide.
"""

from __future__ import annotations

import hashlib
import re

_READABLE = re.compile(r"[A-Za-z0-9_-]*")
_MAX_GROUP_NAME = 99


def namespace_group(namespace: str) -> str:
    return _group(("ns", namespace))


def room_group(namespace: str, room: str) -> str:
    return _group(("ns", namespace, "r", room))


def _group(parts: tuple[str, ...]) -> str:
    readable = ".".join(parts)
    if (
        all(_READABLE.fullmatch(part) for part in parts)
        and len(readable) <= _MAX_GROUP_NAME
        and parts[1]
    ):
        return readable
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:48]
    return f"nsh.{digest}"
