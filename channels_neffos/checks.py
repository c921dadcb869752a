"""Django system checks for ``CHANNEL_LAYERS`` entries that use channels_neffos.

With ``"channels_neffos"`` in ``INSTALLED_APPS``, ``manage.py check`` (and ``runserver``, and
every management command) finds a wrong layer configuration before the first message does.
Each entry whose ``BACKEND`` is one of our layers — ``MultiChannelLayer`` children included — is
built exactly as Channels would build it (that connects to nothing), and:

=========================  ========================================================================
``channels_neffos.E001``   an option the layer does not know (a typo: the hint names the closest)
``channels_neffos.E002``   ``hosts`` given as a bare string instead of a list
``channels_neffos.E003``   a ``prefix`` the layer refuses (1 to 50 of ``A-Z a-z 0-9 _ -``)
``channels_neffos.E004``   any other option the layer refuses (its own message)
``channels_neffos.E005``   two aliases on one broker with one prefix: each would receive the
                           other's group messages
``channels_neffos.E006``   a ``channels_neffos.*`` ``BACKEND`` that does not exist
``channels_neffos.E007``   a ``NEFFOS_ACCEPT_RATE``, ``NEFFOS_DRAIN_WINDOW`` or
                           ``NEFFOS_DRAIN_TIMEOUT`` setting that is not a number in its range
``channels_neffos.W001``   (``check --deploy``) credentials sent to a broker without TLS
=========================  ========================================================================

No message of a check shows a secret: addresses are shown as the layer shows them (masked).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from ._core.validation import PREFIX_RE
from .channel_layer import NeffosChannelLayer
from .multi import MultiChannelLayer

_UNKNOWN_OPTION = re.compile(r"unexpected keyword argument '(\w+)'")
#: Options of connect_options (NATS) and hosts dicts (Redis) that carry credentials.
_NATS_CREDENTIALS = (
    "user",
    "password",
    "token",
    "nkeys_seed",
    "nkeys_seed_str",
    "user_credentials",
)


def _entries() -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, entry) for each CHANNEL_LAYERS alias, and each child of a MultiChannelLayer."""
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    for alias, entry in layers.items():
        if not isinstance(entry, dict):
            continue
        yield alias, entry
        config = entry.get("CONFIG")
        if not isinstance(config, dict):
            continue
        children = config.get("layers")
        if _backend_class(entry) is MultiChannelLayer and isinstance(children, list):
            shared = {key: value for key, value in config.items() if key != "layers"}
            for index, child in enumerate(children):
                if isinstance(child, dict):
                    merged = {**child, "CONFIG": {**(child.get("CONFIG") or {}), **shared}}
                    yield f"{alias}.layers[{index}]", merged


def _backend_class(entry: dict[str, Any]) -> type | None:
    backend = entry.get("BACKEND")
    if not isinstance(backend, str):
        return None
    try:
        found = import_string(backend)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def _ours(entry: dict[str, Any]) -> bool:
    backend = entry.get("BACKEND")
    return isinstance(backend, str) and backend.startswith("channels_neffos")


def _known_options(backend: type) -> list[str]:
    names: list[str] = []
    for klass in backend.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                if parameter.name != "self" and parameter.name not in names:
                    names.append(parameter.name)
        if klass is NeffosChannelLayer:
            break
    return names


@register("channels_neffos")  # type: ignore[untyped-decorator]
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001 to E006 for every channels_neffos entry of CHANNEL_LAYERS (see the module docstring)."""
    messages: list[CheckMessage] = []
    built: list[tuple[str, NeffosChannelLayer]] = []
    for label, entry in _entries():
        if not _ours(entry):
            continue
        backend = _backend_class(entry)
        where = f"CHANNEL_LAYERS[{label!r}]"
        if backend is None or not issubclass(backend, (NeffosChannelLayer, MultiChannelLayer)):
            messages.append(
                Error(
                    f"{where}: BACKEND {entry.get('BACKEND')!r} is not a channels_neffos layer",
                    hint="Use channels_neffos.RedisChannelLayer, channels_neffos.NatsChannelLayer "
                    "or channels_neffos.MultiChannelLayer.",
                    id="channels_neffos.E006",
                )
            )
            continue
        config = entry.get("CONFIG") or {}
        if not isinstance(config, dict):
            messages.append(
                Error(f"{where}: CONFIG must be a dict of options", id="channels_neffos.E004")
            )
            continue
        found = _static_problems(where, config)
        messages += found
        if found:
            continue
        if backend is MultiChannelLayer:
            layers = config.get("layers")
            if not isinstance(layers, list) or not layers:
                messages.append(
                    Error(
                        f"{where}: MultiChannelLayer needs 'layers' in CONFIG",
                        hint="'layers': [{'BACKEND': ..., 'CONFIG': {...}}, ...]",
                        id="channels_neffos.E004",
                    )
                )
            continue  # its children are checked as entries of their own
        try:
            layer = backend(**config)
        except (TypeError, ValueError) as exc:
            messages.append(_refusal(where, backend, exc))
            continue
        if isinstance(layer, NeffosChannelLayer):
            built.append((label, layer))
    messages += _shared_prefixes(built)
    return messages


def _static_problems(where: str, config: dict[str, Any]) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    hosts = config.get("hosts")
    if isinstance(hosts, str):
        shown = "<the same URL>" if "@" in hosts else hosts[:80]  # never echo a password
        problems.append(
            Error(
                f"{where}: hosts is a bare string",
                hint=f"Make it a list: 'hosts': [{shown!r}]",
                id="channels_neffos.E002",
            )
        )
    prefix = config.get("prefix", "neffos")
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        problems.append(
            Error(
                f"{where}: prefix {prefix!r} is not allowed",
                hint="Use 1-50 characters from A-Z, a-z, 0-9, '_' and '-' (it starts every "
                "broker subject of this layer).",
                id="channels_neffos.E003",
            )
        )
    return problems


def _refusal(where: str, backend: type, exc: Exception) -> CheckMessage:
    unknown = _UNKNOWN_OPTION.search(str(exc))
    if unknown is None:
        return Error(f"{where}: {exc}", id="channels_neffos.E004")
    name = unknown.group(1)
    known = _known_options(backend)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    return Error(
        f"{where}: unknown option {name!r} for {backend.__name__}",
        hint=f"{hint}Options: {', '.join(sorted(known))}.",
        id="channels_neffos.E001",
    )


def _url_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    database = parts.path.strip("/") if parts.scheme.startswith("redis") else ""
    return f"{parts.hostname}:{parts.port}/{database or '0'}"


def _broker_addresses(layer: NeffosChannelLayer) -> set[str]:
    """Where a layer's broker is, one string per server, comparable across aliases."""
    entries: list[Any] = list(getattr(layer, "hosts", None) or getattr(layer, "servers", []))
    addresses: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            addresses.add(_url_address(entry))
        elif isinstance(entry, dict) and "master_name" in entry:
            addresses.add(f"sentinel:{entry['master_name']}")
        elif isinstance(entry, dict) and isinstance(entry.get("address"), str):
            addresses.add(_url_address(entry["address"]))
        elif isinstance(entry, dict):
            addresses.add(f"{_host_of(entry)}/{entry.get('db', 0)}")
    return addresses


def _shared_prefixes(built: list[tuple[str, NeffosChannelLayer]]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for index, (label, layer) in enumerate(built):
        for other_label, other in built[:index]:
            if label.startswith(f"{other_label}.") or other_label.startswith(f"{label}."):
                continue  # a MultiChannelLayer and its own child
            if (
                type(layer).broker_name == type(other).broker_name
                and layer.prefix == other.prefix
                and _broker_addresses(layer) & _broker_addresses(other)
            ):
                messages.append(
                    Error(
                        f"CHANNEL_LAYERS[{other_label!r}] and [{label!r}] use the same "
                        f"{type(layer).broker_name} server with the same prefix "
                        f"{layer.prefix!r}: each would receive the other's group messages",
                        hint="Give each alias its own 'prefix' in CONFIG.",
                        id="channels_neffos.E005",
                    )
                )
    return messages


#: The namespaces' Django settings: (name, whether 0 is allowed, whether None is allowed).
_NAMESPACE_SETTINGS = (
    ("NEFFOS_ACCEPT_RATE", False, True),
    ("NEFFOS_DRAIN_WINDOW", True, False),
    ("NEFFOS_DRAIN_TIMEOUT", True, False),
)


@register("channels_neffos")  # type: ignore[untyped-decorator]
def check_namespace_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    problems = []
    for name, zero, none in _NAMESPACE_SETTINGS:
        if not hasattr(settings, name):
            continue
        value = getattr(settings, name)
        if value is None and none:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or value < 0 or (value == 0 and not zero):
            wanted = "a number of seconds >= 0" if zero else "a number > 0"
            problems.append(
                Error(
                    f"settings.{name} must be {wanted}{' or None' if none else ''}, not {value!r}",
                    hint="see docs/recovery.rst",
                    id="channels_neffos.E007",
                )
            )
    return problems


@register("channels_neffos", deploy=True)  # type: ignore[untyped-decorator]
def check_plaintext_credentials(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W001: credentials that would cross the network unencrypted."""
    messages: list[CheckMessage] = []
    for label, entry in _entries():
        config = entry.get("CONFIG")
        if not _ours(entry) or not isinstance(config, dict):
            continue
        for address in _plaintext_with_credentials(config):
            messages.append(
                Warning(
                    f"CHANNEL_LAYERS[{label!r}] sends credentials to {address} without TLS",
                    hint="Use rediss:// (Redis) or tls:// / connect_options={'tls': ...} (NATS) "
                    "so that passwords and tokens are encrypted; see docs/security.rst.",
                    id="channels_neffos.W001",
                )
            )
    return messages


def _plaintext_with_credentials(config: dict[str, Any]) -> Iterator[str]:
    """The (masked) addresses of ``config`` that carry credentials over plain TCP."""
    for host in config.get("hosts") or []:
        options = {"address": host} if isinstance(host, str) else host
        if not isinstance(options, dict):
            continue
        address = options.get("address")
        url = urlsplit(address) if isinstance(address, str) else None
        tls = bool(options.get("ssl")) or (url is not None and url.scheme == "rediss")
        tls = tls or "ssl" in str(options.get("connection_class", "")).lower()
        secret = bool(options.get("password")) or (url is not None and bool(url.password))
        if secret and not tls and not (url is not None and url.scheme == "unix"):
            shown = f"{url.hostname}:{url.port}" if url is not None else _host_of(options)
            yield f"Redis at {shown}"
    options = config.get("connect_options") or {}
    servers = config.get("servers") or []
    servers = [servers] if isinstance(servers, str) else servers
    nats_tls = bool(options.get("tls")) if isinstance(options, dict) else False
    option_secret = isinstance(options, dict) and any(options.get(k) for k in _NATS_CREDENTIALS)
    for server in servers:
        if not isinstance(server, str):
            continue
        url = urlsplit(server)
        if url.scheme == "tls" or nats_tls:
            continue
        if option_secret or url.username or url.password:
            yield f"NATS at {url.hostname}:{url.port}"


def _host_of(options: dict[str, Any]) -> str:
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
