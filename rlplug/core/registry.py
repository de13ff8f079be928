"""The component registry: every named component, with the plugin that provided it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from rlplug.core.hookspecs import COMPONENT_KINDS



class RegistryError(Exception):
    """Base class for registry errors."""


class DuplicateComponentError(RegistryError):
    """Two plugins registered the same name for the same kind of component."""


class UnknownComponentError(RegistryError, KeyError):
    """A component name that no loaded plugin registered."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PluginSource:
    """Where a component came from."""

    plugin_name: str
    distribution: str
    version: str

    def describe(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin_name!r})"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    obj: Any
    source: PluginSource


@dataclass
class Registry:
    """Components by kind and name. Built by :func:`rlplug.core.plugins.get_registry`."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in COMPONENT_KINDS}
    )

    def add(self, kind: str, name: str, obj: Any, source: PluginSource) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{source.describe()} registered a {COMPONENT_KINDS[kind].label} without a name")
        existing = self.components[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{COMPONENT_KINDS[kind].label} {name!r} is registered twice: by {existing.source.describe()} "
                f"and by {source.describe()}. Uninstall or disable one of them "
                f"(RLPLUG_DISABLE_PLUGINS={source.plugin_name})."
            )
        self.components[kind][name] = Component(kind, name, obj, source)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.components[kind][name].obj
        except KeyError:
            raise UnknownComponentError(self.unknown_message(kind, name)) from None

    def source(self, kind: str, name: str) -> PluginSource:
        self.get(kind, name)
        return self.components[kind][name].source

    def unknown_message(self, kind: str, name: str) -> str:
        label = COMPONENT_KINDS[kind].label
        known = self.names(kind)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        message = f"unknown {label} {name!r}."
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        message += f" Available: {', '.join(known) if known else 'none'}."
        if kind == "algorithms":
            message += f" If it ships as a plugin, install it: pip install rlplug-{str(name).replace('_', '-')}"
        else:
            message += " If it ships as a plugin, install that plugin; `rlplug plugins` lists what is loaded."
        return message


def make_register(registry: Registry, kind: str, source: PluginSource) -> Callable[..., None]:
    """The ``register`` callback handed to one plugin's hookimpl for one kind."""
    if COMPONENT_KINDS[kind].named_objects:

        def register_named(obj: Any) -> None:
            registry.add(kind, getattr(obj, "name", None), obj, source)

        return register_named

    def register(name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise RegistryError(f"{source.describe()} registered {COMPONENT_KINDS[kind].label} {name!r} that is not callable")
        registry.add(kind, name, fn, source)

    return register
