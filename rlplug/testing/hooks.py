"""Record what was called: hook calls through pluggy, and calls of registered components."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import pluggy

from rlplug.core.plugins import get_plugin_manager, get_registry


@dataclass
class HookCall:
    """One call of a hook: its name, keyword arguments and each hookimpl's result."""

    name: str
    kwargs: dict[str, Any]
    implementations: list[str]
    results: list[Any] | None = None
    exception: BaseException | None = None


@dataclass
class HookCallRecorder:
    """Every hook call made through the plugin manager while recording."""

    calls: list[HookCall] = field(default_factory=list)

    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def calls_to(self, name: str) -> list[HookCall]:
        return [call for call in self.calls if call.name == name]


@contextmanager
def record_hook_calls(pm: pluggy.PluginManager | None = None) -> Iterator[HookCallRecorder]:
    """Record hook calls with pluggy's ``add_hookcall_monitoring`` until the block exits.

    The component registries are filled by calling each hookimpl directly, once, when
    the registry is built; runtime hooks and direct ``pm.hook.<name>(...)`` calls are
    what this records. To see whether a component ran, use :func:`spy_component`.
    """
    pm = pm or get_plugin_manager()
    recorder = HookCallRecorder()
    pending: list[HookCall] = []

    def before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        call = HookCall(hook_name, dict(kwargs), [impl.plugin_name for impl in hook_impls])
        pending.append(call)
        recorder.calls.append(call)

    def after(outcome: Any, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        call = pending.pop()
        call.exception = outcome.exception
        call.results = None if outcome.exception is not None else outcome.get_result()

    undo = pm.add_hookcall_monitoring(before, after)
    try:
        yield recorder
    finally:
        undo()


@dataclass
class ComponentCall:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any


@dataclass
class ComponentSpy:
    """The calls of one registered component, recorded by :func:`spy_component`."""

    kind: str
    name: str
    calls: list[ComponentCall] = field(default_factory=list)

    @property
    def call_count(self) -> int:
        return len(self.calls)


@contextmanager
def spy_component(kind: str, name: str) -> Iterator[ComponentSpy]:
    """Wrap the registered component ``name`` of ``kind`` so each call is recorded.

    The wrapper keeps the function's signature and attributes, so parameter binding and
    declared facts (e.g. a KL estimator's gradient facts) still work. Spy after any
    temporary registration: rebuilding the registry drops the wrapper.
    """
    registry = get_registry()
    original_fn: Callable[..., Any] = registry.get(kind, name)
    component = registry.components[kind][name]
    spy = ComponentSpy(kind, name)

    @functools.wraps(original_fn)
    def recording(*args: Any, **kwargs: Any) -> Any:
        result = original_fn(*args, **kwargs)
        spy.calls.append(ComponentCall(args, kwargs, result))
        return result

    registry.components[kind][name] = replace(component, obj=recording)
    try:
        yield spy
    finally:
        if registry.components[kind].get(name) is not None and registry.components[kind][name].obj is recording:
            registry.components[kind][name] = component
