"""Sphinx configuration for channels_neffos."""

project = "channels_neffos"
author = "channels_neffos developers"
copyright = "2026, channels_neffos developers"
extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build", "benchmarks/*.rst", "benchmarks/e2e/*.rst"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
nitpicky = False
