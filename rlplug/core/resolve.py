"""Turn an algorithm recipe plus overrides into bound, callable components."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from rlplug.core.algorithm import Algorithm, KLSpec
from rlplug.core.config_fields import config_value
from rlplug.core.hookspecs import COMPONENT_KINDS
from rlplug.core.plugins import get_registry
from rlplug.core.preference import PreferenceData, PreferenceLossSpec, preference_loss_spec

SLOT_KINDS = {"advantage": "advantage_estimators", "policy_loss": "policy_losses", "aggregation": "loss_aggregations"}


class ComponentConfigError(ValueError):
    """A component was given parameters it does not take, or a slot is missing."""


@dataclass(frozen=True)
class BoundComponent:
    """A registered function with its keyword parameters fixed."""

    kind: str
    name: str
    fn: Callable[..., Any]
    params: dict[str, Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args, **self.params)


def bind_component(kind: str, name: str, explicit: dict[str, Any], config: Any = None) -> BoundComponent:
    """Look ``name`` up and bind its keyword parameters.

    Precedence: ``explicit`` params, then the attribute of ``config`` with the same name
    (so TRL's ``epsilon``/``epsilon_high`` reach a clipped loss), then the default. A config
    field set to ``None`` binds by TRL's meaning (``rlplug.core.config_fields``).
    """
    fn = get_registry().get(kind, name)
    parameters = list(inspect.signature(fn).parameters.values())[COMPONENT_KINDS[kind].data_arguments :]
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(explicit) - accepted)
    if unknown:
        raise ComponentConfigError(
            f"{name!r} does not take parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    params: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.name in explicit:
            params[parameter.name] = explicit[parameter.name]
        elif (found := config_value(config, parameter.name))[0]:
            params[parameter.name] = found[1]
        elif parameter.default is inspect.Parameter.empty and parameter.name in accepted:
            raise ComponentConfigError(f"{name!r} needs parameter {parameter.name!r}; give it in the component params")
    return BoundComponent(kind, name, fn, params)


@dataclass(frozen=True)
class OnlineComponents:
    """Everything the online adapter calls, resolved once at construction."""

    algorithm: Algorithm
    advantage: BoundComponent
    policy_loss: BoundComponent
    aggregation: BoundComponent
    kl: KLSpec
    kl_estimator: BoundComponent | None


def resolve_online(algorithm: Algorithm, config: Any = None) -> OnlineComponents:
    """Resolve an online recipe's component names against the registry."""
    bound = {}
    for slot, kind in SLOT_KINDS.items():
        name = getattr(algorithm, slot)
        if name is None:
            raise ComponentConfigError(f"algorithm {algorithm.name!r} names no {slot}; set `{slot}` in the config")
        bound[slot] = bind_component(kind, name, algorithm.component_params.get(slot, {}), config)
    kl_estimator = bind_component("kl_estimators", algorithm.kl.estimator, {}) if algorithm.kl.active else None
    return OnlineComponents(algorithm=algorithm, kl=algorithm.kl, kl_estimator=kl_estimator, **bound)


@dataclass(frozen=True)
class PreferenceComponents:
    """The bound preference loss of a recipe, with what it declared it reads."""

    algorithm: Any
    loss: Any  # rlplug.core.resolve.BoundComponent
    spec: PreferenceLossSpec


def resolve_preference(algorithm: Any, data: PreferenceData, config: Any = None) -> PreferenceComponents:
    """Bind ``algorithm.preference_loss``; refuse a loss written for the other kind of data.

    Parameters bind as for every component: the recipe's ``component_params["preference_loss"]``,
    then the TRL config field of the same name (so TRL's ``beta`` reaches the loss), then
    the function default.
    """
    name = algorithm.preference_loss
    if name is None:
        raise ComponentConfigError(
            f"algorithm {algorithm.name!r} names no preference_loss; set `preference_loss` in the config"
        )
    if algorithm.kl.active:
        raise ComponentConfigError(
            f"algorithm {algorithm.name!r}: a preference loss carries its own regularization (beta); "
            "drop the `kl` setting"
        )
    bound = bind_component("preference_losses", name, algorithm.component_params.get("preference_loss", {}), config)
    spec = preference_loss_spec(bound.fn)
    if spec.data != data:
        raise ComponentConfigError(
            f"preference loss {name!r} takes {spec.data} data but algorithm {algorithm.name!r} runs a {data} "
            f"preference trainer; pick a {data} loss or the matching algorithm"
        )
    return PreferenceComponents(algorithm=algorithm, loss=bound, spec=spec)
