"""Rewards from a config: names + weights + params -> TRL ``reward_funcs`` and ``reward_weights``.

A config lists rewards as ``[{name: accuracy_math, weight: 1.0}, {name: format_think,
weight: 0.2, think_tag: reasoning}]``. Keys other than ``name``, ``weight`` and
``log_name`` are the reward's params (a nested ``params:`` mapping works too). A
reward's params are its keyword-only arguments; each is bound from the entry, else from
the trainer config's field of the same name (so ``max_completion_length`` reaches
``overlong_penalty``), else its default.

Every bound reward is wrapped in :class:`GuardedReward`, which decides what happens when
a reward function misbehaves:

- it raises: the batch is scored again one completion at a time; completions whose call
  raises become None (unscorable: NaN reward, advantage 0 through the estimator's NaN
  handling), the count goes to TRL's ``log_metric`` as ``rewards/<name>/errors``, a
  warning names the function and the first error, and training continues;
- a list for a completion is a set of per-step rewards (process supervision) and passes
  through to rlplug.components.process_rewards, which checks it;
- it returns NaN or +-inf for a completion: that value becomes None, counted as
  ``rewards/<name>/nonfinite``; a value that is not a number counts as an error;
- it returns the wrong number of values: :class:`RewardFunctionError` naming the
  function. That is a bug in the function, not a property of one sample, and any
  guess would misalign rewards with completions, so training stops.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from typing import Any, Callable, Mapping, Sequence

from rlplug.core.plugins import get_registry

logger = logging.getLogger(__name__)

RewardSpec = str | Callable[..., Any] | Mapping[str, Any]

# Arguments TRL passes to every reward function; never bound from a config.
_PASSED_BY_TRAINER = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
_SPEC_KEYS = frozenset({"name", "weight", "log_name", "params"})


class RewardConfigError(ValueError):
    """A reward entry in the config is malformed."""


class RewardFunctionError(ValueError):
    """A reward function broke its contract in a way that cannot be scored around."""


def _discard(*args: Any, **kwargs: Any) -> None:
    return None


class GuardedReward:
    """A reward function with bound params, isolating samples it fails on (see the module docstring).

    Picklable when the wrapped function is (TRL forwards reward functions to spawned
    rollout workers). ``__name__`` is the name TRL logs under. ``error_count`` and
    ``nonfinite_count`` add up over the object's life.
    """

    def __init__(self, fn: Callable[..., Any], name: str, params: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.params = dict(params or {})
        self.__name__ = name
        self.error_count = 0
        self.nonfinite_count = 0

    def __repr__(self) -> str:
        return f"GuardedReward({self.__name__!r}, params={self.params!r})"

    def _call(self, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]) -> Any:
        return self.fn(prompts=prompts, completions=completions, **{**self.params, **kwargs})

    def _one_by_one(self, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], list[BaseException]]:
        size = len(completions)
        values: list[Any] = []
        errors: list[BaseException] = []
        for i in range(size):
            sample_kwargs = {
                key: value[i : i + 1] if isinstance(value, list) and len(value) == size else value
                for key, value in kwargs.items()
            }
            # One call per sample would log one metric/extra column per sample: drop them.
            sample_kwargs.update({key: _discard for key in ("log_extra", "log_metric") if key in kwargs})
            try:
                output = list(self._call(prompts[i : i + 1], completions[i : i + 1], sample_kwargs))
                if len(output) != 1:
                    raise RewardFunctionError(f"returned {len(output)} values for 1 completion")
                values.append(output[0])
            except Exception as exc:
                values.append(None)
                errors.append(exc)
        return values, errors

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[Any]:
        size = len(completions)
        errors: list[BaseException] = []
        try:
            values = self._call(prompts, completions, kwargs)
        except Exception:
            values, errors = self._one_by_one(prompts, completions, kwargs)
        if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
            raise RewardFunctionError(
                f"reward function {self.__name__!r} returned {type(values).__name__}; it must return a list with "
                f"one float or None per completion"
            )
        if len(values) != size:
            raise RewardFunctionError(
                f"reward function {self.__name__!r} returned {len(values)} values for {size} completions; it must "
                f"return one float or None per completion"
            )
        rewards: list[float | None] = []
        nonfinite = 0
        for value in values:
            if value is None or isinstance(value, (list, tuple)):
                rewards.append(value)  # None, or per-step rewards parsed by rlplug.components.process_rewards
                continue
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
                rewards.append(None)
                continue
            if math.isfinite(number):
                rewards.append(number)
            else:
                nonfinite += 1
                rewards.append(None)
        self._report(errors, nonfinite, size, kwargs.get("log_metric"))
        return rewards

    def _report(self, errors: list[BaseException], nonfinite: int, size: int, log_metric: Any) -> None:
        self.error_count += len(errors)
        self.nonfinite_count += nonfinite
        if errors:
            first = errors[0]
            logger.warning(
                "reward function %r failed on %d of %d completions; they are unscorable (NaN reward, advantage 0). "
                "First error: %s: %s", self.__name__, len(errors), size, type(first).__name__, first,
            )
        if callable(log_metric):
            log_metric(f"rewards/{self.__name__}/errors", float(len(errors)))
            log_metric(f"rewards/{self.__name__}/nonfinite", float(nonfinite))


def reward_params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The params a config may set on ``fn``: its keyword-only arguments."""
    return {
        p.name: p for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _PASSED_BY_TRAINER
    }


def bind_reward_params(fn: Callable[..., Any], name: str, explicit: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Explicit params, then the config field of the same name, then the default; unknown or missing ones fail."""
    accepted = reward_params(fn)
    unknown = sorted(set(explicit) - set(accepted))
    if unknown:
        raise RewardConfigError(
            f"reward {name!r} does not take param(s) {', '.join(unknown)}; it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    params: dict[str, Any] = {}
    for param in accepted.values():
        if param.name in explicit:
            params[param.name] = explicit[param.name]
        elif config is not None and hasattr(config, param.name):
            params[param.name] = getattr(config, param.name)
        elif param.default is inspect.Parameter.empty:
            raise RewardConfigError(f"reward {name!r} needs param {param.name!r}; give it in its `rewards` entry")
    return params


def _parse_entry(entry: Mapping[str, Any]) -> tuple[str, float | None, str | None, dict[str, Any]]:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise RewardConfigError(f"a `rewards` entry needs a `name`: got {dict(entry)!r}")
    nested = entry.get("params") or {}
    if not isinstance(nested, Mapping):
        raise RewardConfigError(f"reward {name!r}: `params` must be a mapping, got {type(nested).__name__}")
    flat = {key: value for key, value in entry.items() if key not in _SPEC_KEYS}
    both = sorted(set(flat) & set(nested))
    if both:
        raise RewardConfigError(f"reward {name!r}: param(s) {', '.join(both)} given both inline and under `params`")
    weight = entry.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RewardConfigError(f"reward {name!r}: `weight` must be a finite number, got {weight!r}")
        weight = float(weight)
    log_name = entry.get("log_name")
    if log_name is not None and (not isinstance(log_name, str) or not log_name):
        raise RewardConfigError(f"reward {name!r}: `log_name` must be a non-empty string, got {log_name!r}")
    return name, weight, log_name, {**nested, **flat}


def _callable_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _bind_one(spec: RewardSpec, config: Any) -> tuple[Any, float | None]:
    import torch

    if isinstance(spec, torch.nn.Module):
        return spec, None  # a reward model object: TRL scores it itself
    if isinstance(spec, GuardedReward):
        return spec, None
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        if inspect.iscoroutinefunction(spec) or inspect.iscoroutinefunction(getattr(spec, "__call__", None)):
            return spec, None  # TRL awaits async rewards; the guard is synchronous
        return GuardedReward(spec, _callable_name(spec)), None
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise RewardConfigError(f"a reward must be a name, a mapping or a callable, got {type(spec).__name__}")
    name, weight, log_name, explicit = _parse_entry(spec)
    fn = get_registry().get("reward_functions", name)
    params = bind_reward_params(fn, name, explicit, config)
    if inspect.iscoroutinefunction(fn):
        bound = functools.partial(fn, **params)
        return bound, weight
    return GuardedReward(fn, log_name or name, params), weight


def build_reward_functions(
    specs: Sequence[RewardSpec] | RewardSpec | None, config: Any = None
) -> tuple[list[Any], list[float] | None]:
    """TRL ``reward_funcs`` and ``reward_weights`` from config entries, names or callables.

    Each spec is a registered name, a mapping ``{name, weight?, log_name?, params?,
    **params}``, a callable (guarded as is), or a ``torch.nn.Module`` (passed to TRL as a
    reward model). ``config`` is the trainer config whose fields fill params of the same
    name. The weights are None when no entry gives one (TRL then weighs all by 1.0);
    otherwise entries without a weight get 1.0. Unknown names raise the registry's
    did-you-mean error.
    """
    if specs is None:
        return [], None
    if isinstance(specs, (str, Mapping)) or callable(specs):
        specs = [specs]
    functions: list[Any] = []
    weights: list[float | None] = []
    for spec in specs:
        function, weight = _bind_one(spec, config)
        functions.append(function)
        weights.append(weight)
    names = [_callable_name(f) for f in functions if not _is_module(f)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RewardConfigError(
            f"reward name(s) {', '.join(duplicated)} appear more than once, so their metrics would mix; "
            f"give each entry its own `log_name`"
        )
    if all(weight is None for weight in weights):
        return functions, None
    return functions, [1.0 if weight is None else weight for weight in weights]


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)
