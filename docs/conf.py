"""Sphinx configuration for channels_neffos."""

import re
import sys
from pathlib import Path

# Document the checkout these docs belong to, whatever else the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django
from django.conf import settings

import channels_neffos

# Some modules (the signals, the consumers, the management command) import Django; autodoc
# needs settings for them. Minimal ones, only when nothing configured Django already.
if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["channels", "channels_neffos"],
        CHANNEL_LAYERS={},
        USE_TZ=True,
    )
    django.setup()

project = "channels_neffos"
author = "channels_neffos developers"
copyright = "2026, channels_neffos developers"
release = version = channels_neffos.__version__  # the one version number
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["_build", "benchmarks/*.rst", "benchmarks/e2e/*.rst"]

html_theme = "furo"
html_title = "channels_neffos"

autodoc_member_order = "bysource"
nitpicky = False


# Docstrings name sibling modules relatively, as imports do: ``:mod:`.presence``` in a module of
# ``channels_neffos.namespaces`` means ``channels_neffos.namespaces.presence``. Sphinx instead
# searches every object whose name ends in ``.presence`` (``channels_neffos.presence`` too) and
# warns when it finds two; so spell such targets out, relative to the docstring's package.
_RELATIVE_REF = re.compile(
    r":(?P<role>mod|func|class|exc|data|meth|attr):`"
    r"(?:(?P<title>[^`<]*?)\s*<(?P<tilde1>~?)\.(?P<target1>[\w.]+)>"
    r"|(?P<tilde2>~?)\.(?P<target2>[\w.]+))`"
)


def _package_of(name: str) -> str | None:
    """The package whose siblings a relative reference in ``name``'s docstring names."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None:
            if hasattr(module, "__path__"):  # a package: ``.x`` is its own submodule
                return module.__name__
            return module.__name__.rpartition(".")[0] or None
    return None


def _spell_out_relative_refs(app, what, name, obj, options, lines):
    package = _package_of(name)
    if package is None:
        return

    def spell_out(match: re.Match) -> str:
        target = match["target1"] or match["target2"]
        if f"{package}.{target.split('.')[0]}" not in sys.modules:
            return match[0]  # not a sibling module: leave it to Sphinx
        title = match["title"]
        if not title:
            shown = target.rsplit(".", 1)[-1] if (match["tilde1"] or match["tilde2"]) else target
            title = shown + ("()" if match["role"] in ("func", "meth") else "")
        return f":{match['role']}:`{title} <{package}.{target}>`"

    lines[:] = [_RELATIVE_REF.sub(spell_out, line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _spell_out_relative_refs)
