"""Plugin loading: built-ins from DEFAULT_PLUGINS, then the ``rlplug`` entry points.

Loading is lazy (``import rlplug`` loads nothing) and idempotent. Each entry point is
loaded on its own, so one broken plugin is reported by name while the rest still load.
A plugin whose distribution requires an rlplug version other than this one is refused
before its module is imported.

Environment controls:
- ``RLPLUG_LOAD_PLUGINS``: comma list of entry-point names to load; set but empty loads none.
- ``RLPLUG_DISABLE_PLUGINS``: comma list of entry-point names to skip.
- ``RLPLUG_STRICT_PLUGINS=1``: a plugin that fails to load is an error, not a warning.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Iterable

import pluggy

from rlplug.core import hookspecs, version
from rlplug.core.registry import COMPONENT_KINDS, PluginSource, Registry, make_register

ENTRY_POINT_GROUP = "rlplug"
DEFAULT_PLUGINS: tuple[str, ...] = ("rlplug.components.builtin", "rlplug.trl.kinds", "rlplug.demo.plugin")
"""Modules registered before any entry point: the shared components, the TRL adapters' trainer
kinds and the demo's reward. Named, not imported, so the core imports no floor above it."""


class PluginLoadError(RuntimeError):
    """A plugin failed to load in strict mode."""


class PluginLoadWarning(UserWarning):
    """A plugin failed to load and was skipped."""


class IncompatiblePluginError(RuntimeError):
    """A plugin's distribution requires a version of rlplug other than the one installed."""


@dataclass
class _State:
    pm: pluggy.PluginManager | None = None
    sources: dict[str, PluginSource] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    registry: Registry | None = None


_state = _State()


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("rlplug")
    pm.add_hookspecs(hookspecs)
    return pm


def check_rlplug_requirement(dist: Any) -> None:
    """Raise IncompatiblePluginError when ``dist`` requires an rlplug version other than this one.

    Reads the distribution's ``Requires-Dist: rlplug ...`` (markers evaluated, extras ignored).
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    installed = version.__version__
    for line in getattr(dist, "requires", None) or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != "rlplug":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(Version(installed), prereleases=True):
            raise IncompatiblePluginError(
                f"{dist.name} {dist.version} requires rlplug{requirement.specifier} but rlplug {installed} "
                f"is installed; install a release of {dist.name} made for rlplug {installed}, or an rlplug "
                f"that satisfies {requirement.specifier}"
            )


def _load_entry_point(pm: pluggy.PluginManager, ep: Any, strict: bool) -> None:
    dist = getattr(ep, "dist", None)
    dist_name = dist.name if dist is not None else "unknown distribution"
    dist_version = dist.version if dist is not None else "?"
    try:
        if dist is not None:
            check_rlplug_requirement(dist)
        module = ep.load()
        pm.register(module, name=ep.name)
        pm.check_pending()
    except Exception as exc:
        if pm.has_plugin(ep.name):
            pm.unregister(name=ep.name)
        message = (
            f"rlplug plugin {ep.name!r} from {dist_name} {dist_version} failed to load and was skipped: "
            f"{type(exc).__name__}: {exc}"
        )
        _state.failures[ep.name] = message
        if strict:
            raise PluginLoadError(message) from exc
        warnings.warn(message, PluginLoadWarning, stacklevel=3)
        return
    _state.sources[ep.name] = PluginSource(ep.name, dist_name, dist_version)


def _check_names(names: Iterable[str], installed: list[str]) -> None:
    for name in names:
        if name not in installed:
            close = difflib.get_close_matches(name, installed, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(
                f"no rlplug plugin with entry point {name!r} is installed.{hint} "
                f"Installed: {', '.join(installed) or 'none'} (pip install rlplug-{name.replace('_', '-')})"
            )


def get_plugin_manager() -> pluggy.PluginManager:
    """Load every plugin once (as the environment selects) and return the plugin manager."""
    if _state.pm is None:
        load_plugins()
    return _state.pm


def load_plugins(only: Iterable[str] | None = None, disable: Iterable[str] | None = None) -> pluggy.PluginManager:
    """Load the built-ins and the ``rlplug`` entry points, and return the plugin manager.

    ``only``: entry-point names to load (none but the built-ins if empty); ``disable``:
    entry-point names to skip. Given, they replace ``RLPLUG_LOAD_PLUGINS`` and
    ``RLPLUG_DISABLE_PLUGINS``, and replace what an earlier call loaded; a script selects its
    plugins with ``rlplug.load_plugins(only=["grpo", "rewards"])`` before anything else.
    Without arguments the first call loads what the environment selects and later calls
    return what is loaded.
    """
    if _state.pm is not None and only is None and disable is None:
        return _state.pm
    reset()
    pm = _new_plugin_manager()
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        _state.sources[module_name] = PluginSource(module_name, "rlplug", version.__version__)
    pm.check_pending()

    strict = os.environ.get("RLPLUG_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")
    selected = list(only) if only is not None else _env_list("RLPLUG_LOAD_PLUGINS")
    disabled = set(disable if disable is not None else _env_list("RLPLUG_DISABLE_PLUGINS") or [])
    installed = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    if only is not None:
        _check_names(only, [ep.name for ep in installed])
    for ep in installed:
        if selected is not None and ep.name not in selected:
            continue
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        _load_entry_point(pm, ep, strict)
    _state.pm = pm
    return pm


def get_registry() -> Registry:
    """The registry of every component from every loaded plugin (built once)."""
    if _state.registry is not None:
        return _state.registry
    pm = get_plugin_manager()
    registry = Registry()
    for kind in COMPONENT_KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            source = _state.sources.get(impl.plugin_name) or PluginSource(impl.plugin_name, "unknown", "?")
            kwargs = {"register": make_register(registry, kind, source)}
            impl.function(**{name: kwargs[name] for name in impl.argnames})
    _state.registry = registry
    return registry


def reset() -> None:
    """Forget loaded plugins and the registry; the next call loads them again (for tests)."""
    global _state
    _state = _State()


def invalidate_registry() -> None:
    """Rebuild the registry on next use, after plugins were (un)registered by hand."""
    _state.registry = None


def load_failures() -> dict[str, str]:
    """Entry-point name -> message, for plugins that failed to load."""
    get_plugin_manager()
    return dict(_state.failures)


def plugin_sources() -> dict[str, PluginSource]:
    get_plugin_manager()
    return dict(_state.sources)


def describe_plugins(include_builtins: bool = False) -> list[dict[str, Any]]:
    """One entry per loaded plugin: distribution, version, entry point, components by kind."""
    registry = get_registry()
    rows = []
    for plugin_name, source in sorted(_state.sources.items()):
        if not include_builtins and plugin_name in DEFAULT_PLUGINS:
            continue
        components = {
            kind: sorted(c.name for c in registry.components[kind].values() if c.source.plugin_name == plugin_name)
            for kind in COMPONENT_KINDS
        }
        rows.append(
            {
                "name": source.distribution,
                "version": source.version,
                "entry_point": None if plugin_name in DEFAULT_PLUGINS else plugin_name,
                "module": plugin_name if plugin_name in DEFAULT_PLUGINS else None,
                "components": {kind: names for kind, names in components.items() if names},
            }
        )
    return rows
