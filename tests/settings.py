"""Minimal Django settings for the test suite."""

SECRET_KEY = "channels-neffos-tests"
INSTALLED_APPS = ["channels", "channels_neffos"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
