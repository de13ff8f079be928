"""``rlplug new-plugin NAME``: generate ``rlplug-NAME/``, a plugin package with a passing test.

The templates are package data under ``rlplug/app/templates/plugin``, filled in with
:class:`string.Template`. A path segment ``__module__`` becomes the module name and the
``.tmpl`` suffix is dropped.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from packaging.version import Version

TEMPLATE_ROOT = ("app", "templates", "plugin")
if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


class NewPluginError(ValueError):
    """The plugin cannot be generated: a bad name or an existing directory."""


def rlplug_requirement(version: str) -> str:
    """``rlplug>=MAJOR.MINOR,<NEXT_MAJOR`` for the installed rlplug version, e.g. ``rlplug>=0.1,<1``."""
    parsed = Version(version)
    return f"rlplug>={parsed.major}.{parsed.minor},<{parsed.major + 1}"


def plugin_names(name: str) -> dict[str, str]:
    """The three fixed names: distribution ``rlplug-NAME``, module ``rlplug_NAME``, entry point ``NAME``."""
    if name.startswith(("rlplug-", "rlplug_")):
        raise NewPluginError(f"give the plugin name without the rlplug prefix: rlplug new-plugin {name[7:]}")
    if not _NAME.match(name):
        raise NewPluginError(
            f"plugin name {name!r} must be lowercase letters and digits, words joined by '-' or '_', "
            "starting with a letter (e.g. my-algo)"
        )
    identifier = name.replace("-", "_")
    return {
        "name": name,
        "dist": f"rlplug-{identifier.replace('_', '-')}",
        "module": f"rlplug_{identifier}",
        "entry_point": identifier,
    }


def _template_files(directory: "Traversable", prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], "Traversable"]]:
    found = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _template_files(entry, (*prefix, entry.name))
        elif entry.name.endswith(".tmpl"):
            found.append(((*prefix, entry.name[: -len(".tmpl")]), entry))
    return found


def create_plugin(name: str, directory: str | Path = ".", rlplug_version: str | None = None) -> Path:
    """Write ``rlplug-NAME/`` under ``directory`` and return its path."""
    if rlplug_version is None:
        from rlplug.core.version import __version__ as rlplug_version
    values = {**plugin_names(name), "rlplug_requirement": rlplug_requirement(rlplug_version)}
    target = Path(directory) / values["dist"]
    if target.exists():
        raise NewPluginError(f"{target} already exists; choose another name or --dir")
    root = files("rlplug").joinpath(*TEMPLATE_ROOT)
    rendered = []
    for parts, template in _template_files(root):
        relative = Path(*(part.replace("__module__", values["module"]) for part in parts))
        rendered.append((relative, Template(template.read_text(encoding="utf-8")).substitute(values)))
    for relative, text in rendered:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the plugin name: makes rlplug-NAME with module rlplug_NAME")
    parser.add_argument("--dir", default=".", help="where to create rlplug-NAME/ (default: the current directory)")


def run(args: argparse.Namespace) -> int:
    """The ``rlplug new-plugin`` command."""
    try:
        target = create_plugin(args.name, args.dir)
    except NewPluginError as error:
        print(f"rlplug new-plugin: {error}", file=sys.stderr)
        return 2
    print(f"Created {target}")
    print(f"Next: pip install -e {target} && pytest {target}")
    return 0
