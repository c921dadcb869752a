"""The Django app: add ``"channels_neffos"`` to ``INSTALLED_APPS`` for its system checks
(:mod:`channels_neffos.checks`). The layers themselves work without it."""

from __future__ import annotations

from django.apps import AppConfig


class ChannelsNeffosConfig(AppConfig):  # type: ignore[misc]
    name = "channels_neffos"
    verbose_name = "channels_neffos"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
