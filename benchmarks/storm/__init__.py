"""Reconnect-storm benchmark: see __main__.py."""
