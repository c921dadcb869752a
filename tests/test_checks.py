"""Django system checks for CHANNEL_LAYERS (channels_neffos.checks), in-process and through
``manage.py check`` of the test project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-pw-123"


def ids(layers: dict[str, Any], *, deploy: bool = False) -> list[tuple[str, str, str]]:
    with override_settings(CHANNEL_LAYERS=layers):
        found = run_checks(tags=["channels_neffos"], include_deployment_checks=deploy)
    for message in found:
        assert SECRET not in f"{message.msg} {message.hint}", message
    return [(m.id, m.msg, m.hint or "") for m in found if m.id.startswith("channels_neffos")]


def redis(**config: Any) -> dict[str, Any]:
    return {"BACKEND": "channels_neffos.RedisChannelLayer", "CONFIG": config}


def nats(**config: Any) -> dict[str, Any]:
    return {"BACKEND": "channels_neffos.NatsChannelLayer", "CONFIG": config}


def test_a_good_configuration_has_no_messages() -> None:
    layers = {
        "default": redis(hosts=["redis://127.0.0.1:6379/0"], prefix="app"),
        "other": nats(servers=["nats://127.0.0.1:4222"], prefix="app"),
        "second-db": redis(hosts=["redis://127.0.0.1:6379/1"], prefix="app"),
        "channels": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    assert ids(layers) == []
    assert ids(layers, deploy=True) == []


def test_unknown_option_names_the_closest() -> None:
    [(id_, msg, hint)] = ids({"default": redis(hots=["redis://h:1"])})
    assert id_ == "channels_neffos.E001"
    assert "'hots'" in msg and "RedisChannelLayer" in msg
    assert "Did you mean 'hosts'?" in hint
    [(id_, msg, hint)] = ids({"default": nats(capcity=10)})
    assert id_ == "channels_neffos.E001" and "Did you mean 'capacity'?" in hint


def test_bare_string_hosts_never_echoes_a_password() -> None:
    [(id_, _, hint)] = ids({"default": redis(hosts="redis://127.0.0.1:6379")})
    assert id_ == "channels_neffos.E002" and "['redis://127.0.0.1:6379']" in hint
    [(id_, _, hint)] = ids({"default": redis(hosts=f"redis://:{SECRET}@127.0.0.1:6379")})
    assert id_ == "channels_neffos.E002" and "<the same URL>" in hint


def test_bad_prefix_and_other_refusals() -> None:
    [(id_, msg, _)] = ids({"default": nats(prefix="my app*")})
    assert id_ == "channels_neffos.E003" and "'my app*'" in msg
    [(id_, msg, _)] = ids({"default": nats(capacity=0)})
    assert id_ == "channels_neffos.E004" and "capacity" in msg
    [(id_, msg, _)] = ids({"default": {"BACKEND": "channels_neffos.NoSuchLayer"}})
    assert id_ == "channels_neffos.E006"


def test_two_aliases_sharing_a_broker_and_prefix() -> None:
    layers = {
        "default": redis(hosts=["redis://127.0.0.1:6379/0"]),
        "chat": redis(hosts=[{"address": "redis://127.0.0.1:6379"}]),
        "events": nats(servers=["nats://10.0.0.1:4222"], prefix="x"),
        "more-events": nats(servers=["nats://10.0.0.2:4222", "nats://10.0.0.1:4222"], prefix="x"),
    }
    found = ids(layers)
    assert [id_ for id_, _, _ in found] == ["channels_neffos.E005"] * 2
    assert "'default'" in found[0][1] and "'chat'" in found[0][1] and "'neffos'" in found[0][1]
    assert "'events'" in found[1][1] and "'more-events'" in found[1][1]


def test_multi_layer_children_are_checked() -> None:
    layers = {
        "default": {
            "BACKEND": "channels_neffos.MultiChannelLayer",
            "CONFIG": {
                "prefix": "app",
                "layers": [redis(hosts=["redis://h:6379"]), nats(severs=["nats://h:4222"])],
            },
        }
    }
    [(id_, msg, hint)] = ids(layers)
    assert id_ == "channels_neffos.E001" and "default.layers[1]" in msg
    assert "Did you mean 'servers'?" in hint


def test_deploy_warns_about_credentials_without_tls() -> None:
    layers = {
        "a": redis(hosts=[f"redis://user:{SECRET}@db.internal:6379"], prefix="a"),
        "b": redis(hosts=[f"rediss://user:{SECRET}@db.internal:6380"], prefix="b"),
        "c": redis(hosts=[{"host": "db.internal", "port": 6381, "password": SECRET}], prefix="c"),
        "d": nats(servers=["nats://mq.internal:4222"], connect_options={"token": SECRET}),
        "e": nats(
            servers=["tls://mq.internal:4223"], connect_options={"token": SECRET}, prefix="e"
        ),
        "f": redis(hosts=["redis://db.internal:6379"], prefix="f"),  # no credentials
    }
    found = ids(layers, deploy=True)
    assert [(id_, msg.split("]")[0]) for id_, msg, _ in found] == [
        ("channels_neffos.W001", "CHANNEL_LAYERS['a'"),
        ("channels_neffos.W001", "CHANNEL_LAYERS['c'"),
        ("channels_neffos.W001", "CHANNEL_LAYERS['d'"),
    ]
    assert ids(layers) == []  # only with --deploy


@pytest.mark.parametrize("prefix", ["demo", "bad prefix"])
def test_manage_py_check_of_the_test_project(prefix: str) -> None:
    """The app is installed in testproject: `manage.py check` runs our checks."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "testproject"), str(REPO)]),
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "CHANNEL_PREFIX": prefix,
    }
    command = [sys.executable, "testproject/manage.py", "check"]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    if prefix == "demo":
        assert run.returncode == 0, run.stdout + run.stderr
        assert "no issues" in run.stdout
    else:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "channels_neffos.E003" in run.stderr, run.stderr


def test_drain_and_admission_settings_are_checked() -> None:
    layers = {"default": redis(hosts=["redis://127.0.0.1:6379/0"], prefix="app")}
    with override_settings(NEFFOS_ACCEPT_RATE=None, NEFFOS_DRAIN_WINDOW=0, NEFFOS_DRAIN_TIMEOUT=30):
        assert ids(layers) == []
    with override_settings(NEFFOS_ACCEPT_RATE=0, NEFFOS_DRAIN_WINDOW="5", NEFFOS_DRAIN_TIMEOUT=-1):
        found = ids(layers)
    assert [(id_, msg.split(" must")[0]) for id_, msg, _ in found] == [
        ("channels_neffos.E007", "settings.NEFFOS_ACCEPT_RATE"),
        ("channels_neffos.E007", "settings.NEFFOS_DRAIN_WINDOW"),
        ("channels_neffos.E007", "settings.NEFFOS_DRAIN_TIMEOUT"),
    ]
