"""A reusable conformance suite for channel layers, run on real brokers.

Subclass :class:`ChannelLayerConformance` and provide a ``layer_spec`` fixture returning a
:class:`LayerSpec`; every call to ``make_layer()`` then builds a *separate* layer instance on the
same broker and prefix — to the layer, a separate process. Cases that need a real broker (two
instances, OS processes, broker-side errors) are in the base class too; a subclass for a layer
where a case does not apply (e.g. Channels' ``InMemoryChannelLayer``) switches it off by setting
the test attribute to ``None``, so the run reports no skips.

Example, with the broker fixtures of :mod:`channels_neffos.testing.plugin`::

    pytest_plugins = ["channels_neffos.testing.plugin"]  # in the top-level conftest.py

    class TestMyLayer(ChannelLayerConformance):
        @pytest.fixture
        def layer_spec(self, neffos_redis_server):
            return LayerSpec("channels_neffos.RedisChannelLayer",
                             {"hosts": [neffos_redis_server.url], "prefix": unique_prefix()})

:func:`eventually` and :func:`receive_within` wait on an outcome, with a deadline, instead of
sleeping a fixed time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._ask import AskCases
from ._groups import GroupCases
from ._helpers import LayerSpec, eventually, receive_within, unique_prefix
from ._history import HistoryCases
from ._hygiene import HygieneCases
from ._limits import LimitCases
from ._messaging import MessagingCases
from ._presence import PresenceCases

__all__ = [
    "AskCases",
    "ChannelLayerConformance",
    "HistoryCases",
    "LayerSpec",
    "NeffosLayerConformance",
    "PresenceCases",
    "eventually",
    "receive_within",
    "unique_prefix",
]


class ChannelLayerConformance(MessagingCases, GroupCases, LimitCases, HygieneCases):
    """The behaviour every channels_neffos layer guarantees; see the module docstring."""

    @pytest.fixture
    def layer_spec(self) -> LayerSpec:
        raise NotImplementedError("subclasses provide a layer_spec fixture")

    @pytest.fixture
    def make_layer(self, layer_spec: LayerSpec) -> Callable[..., Any]:
        return layer_spec.build

    @pytest.fixture
    def layer(self, make_layer: Callable[..., Any]) -> Any:
        return make_layer()


class NeffosLayerConformance(ChannelLayerConformance, AskCases, PresenceCases):
    """Everything a channels_neffos layer guarantees, including the ``ask`` and ``presence``
    extensions."""
