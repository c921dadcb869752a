"""Configuration is checked when the layer is built, with messages that say what to fix."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from channels_neffos import NatsChannelLayer, RedisChannelLayer


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, NatsChannelLayer])
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("prefix", "has:colon", "prefix must be"),
        ("prefix", "", "prefix must be"),
        ("prefix", "a*", "prefix must be"),
        ("capacity", 0, "capacity must be a positive integer"),
        ("capacity", 1.5, "capacity must be a positive integer"),
        ("expiry", 0, "expiry must be a positive number"),
        ("expiry", "60", "expiry must be a positive number"),
        ("group_expiry", -1, "group_expiry must be a positive number"),
        ("channel_capacity", ["x"], "channel_capacity must be a dict"),
        ("no_such_option", 1, "no_such_option"),
    ],
)
def test_bad_option_raises_type_error(
    layer_class: type, option: str, value: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        layer_class(**{option: value})


def test_defaults() -> None:
    layer = NatsChannelLayer()
    assert (layer.prefix, layer.capacity, layer.expiry, layer.group_expiry) == (
        "neffos",
        100,
        60,
        86400,
    )
    assert RedisChannelLayer().hosts == ["redis://localhost:6379"]
    assert NatsChannelLayer().servers == ["nats://localhost:4222"]


@pytest.mark.parametrize(
    "backend", ["channels_neffos.RedisChannelLayer", "channels_neffos.NatsChannelLayer"]
)
def test_usable_as_backend_string(backend: str) -> None:
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": {"prefix": "x"}}}
    ):
        layer = get_channel_layer()
        assert type(layer).__module__ == "channels_neffos.layers"
        assert layer.prefix == "x"
        assert "groups" in layer.extensions
