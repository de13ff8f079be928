"""Register a component or a plugin for the length of a test, then remove it."""

from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Any, Iterator

from rlplug.core.hookspecs import hookimpl
from rlplug.core.plugins import get_plugin_manager, invalidate_registry
from rlplug.core.registry import COMPONENT_KINDS


def component_plugin(kind: str, name: str, obj: Any) -> types.SimpleNamespace:
    """A plugin object whose one hookimpl registers ``obj`` as ``name`` of ``kind``.

    ``kind`` is a registry kind such as ``"advantage_estimators"``; for ``"algorithms"``
    ``obj`` is an :class:`rlplug.Algorithm` and ``name`` must be its name.
    """
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"unknown component kind {kind!r}; one of: {', '.join(COMPONENT_KINDS)}")
    if kind == "algorithms":
        if getattr(obj, "name", None) != name:
            raise ValueError(f"an algorithm registers under its own name: got name {name!r} for {obj!r}")

        def register_algorithms(register):
            register(obj)

        impl = register_algorithms
    else:

        def impl(register):
            register(name, obj)

        impl.__name__ = f"register_{kind}"
    return types.SimpleNamespace(**{f"register_{kind}": hookimpl(impl)})


@contextmanager
def temporary_plugin(plugin: Any, name: str) -> Iterator[Any]:
    """Register ``plugin`` (a module or object with hookimpls) under ``name``; unregister on exit.

    A misspelled hookimpl name fails here, as it does at load time.
    """
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except Exception:
        pm.unregister(name=name)
        raise
    invalidate_registry()
    try:
        yield plugin
    finally:
        if pm.has_plugin(name):
            pm.unregister(name=name)
        invalidate_registry()


@contextmanager
def temporary_component(kind: str, name: str, obj: Any, plugin_name: str | None = None) -> Iterator[Any]:
    """Register one component by name for the duration of the ``with`` block.

    >>> with temporary_component("advantage_estimators", "zero", lambda rollout: rollout.rewards * 0):
    ...     rlplug.get_registry().get("advantage_estimators", "zero")
    """
    plugin_name = plugin_name or f"rlplug.testing:{kind}:{name}"
    with temporary_plugin(component_plugin(kind, name, obj), plugin_name):
        yield obj
