"""The hook points of rlplug, and the component kinds they register.

Every hook is registration style: a plugin receives a ``register`` callback and calls it
once per component. A hookimpl may accept a subset of the arguments; specs only ever gain
arguments. Each spec is declared with :func:`component_kind`, which is the one place a
kind is defined: the registry's labels and the binder's count of data arguments come from
:data:`COMPONENT_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

import pluggy

if TYPE_CHECKING:
    from torch import Tensor

    from rlplug.core.aggregation import AggregationContext
    from rlplug.core.algorithm import Algorithm
    from rlplug.core.preference import PreferenceBatch
    from rlplug.core.rollout import Rollout
    from rlplug.core.trainer_kinds import TrainerKind

hookspec = pluggy.HookspecMarker("rlplug")
hookimpl = pluggy.HookimplMarker("rlplug")


class AdvantageEstimator(Protocol):
    def __call__(self, rollout: Rollout, /, **params: Any) -> Tensor: ...


class KLEstimator(Protocol):
    def __call__(self, logps: Tensor, ref_logps: Tensor, /) -> Tensor: ...


class PolicyLoss(Protocol):
    def __call__(
        self, logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, /, **params: Any
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


class ValueLoss(Protocol):
    def __call__(
        self, values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, /, **params: Any
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


class LossAggregation(Protocol):
    def __call__(self, per_token_loss: Tensor, mask: Tensor, ctx: AggregationContext, /, **params: Any) -> Tensor: ...


class SamplingCorrection(Protocol):
    def __call__(
        self, logps: Tensor, old_logps: Tensor, sampling_logps: Tensor | None, advantages: Tensor, mask: Tensor, /,
        **params: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


class PreferenceLoss(Protocol):
    def __call__(self, batch: PreferenceBatch, /, **params: Any) -> tuple[Tensor, dict[str, Tensor]]: ...


class RewardFunction(Protocol):
    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]: ...


Component = TypeVar("Component")
Register = Callable[[str, Component], None]
"""``register(name, fn)``: the callback a hookimpl receives."""


@dataclass(frozen=True)
class ComponentKind:
    """One kind of registered component.

    - ``name``: the registry key, the hook's name without ``register_``.
    - ``label``: how messages name one of them.
    - ``data_arguments``: leading positional arguments that carry data; the rest are
      parameters, bound by name (see :func:`rlplug.core.resolve.bind_component`).
    - ``named_objects``: registered as ``register(obj)`` with ``obj.name`` (recipes, trainer
      kinds) rather than ``register(name, fn)``.
    """

    name: str
    label: str
    data_arguments: int = 0
    named_objects: bool = False


COMPONENT_KINDS: dict[str, ComponentKind] = {}


def component_kind(label: str, data_arguments: int = 0, named_objects: bool = False) -> Callable[[Callable], Callable]:
    """Declare a registration hookspec and the component kind it registers."""

    def declare(spec: Callable) -> Callable:
        name = spec.__name__.removeprefix("register_")
        COMPONENT_KINDS[name] = ComponentKind(name, label, data_arguments, named_objects)
        return hookspec(spec)

    return declare


@component_kind("advantage estimator", data_arguments=1)
def register_advantage_estimators(register: Register[AdvantageEstimator]) -> None:
    """Register advantage estimators: ``register(name, fn)``.

    ``fn(rollout: rlplug.Rollout, **params) -> Tensor`` of shape ``(B,)`` (one advantage
    per completion) or ``(B, T)`` (one per completion token). The rollout is the global
    batch, every process's completions, so each group is whole. NaN rewards mean
    "unscorable"; such completions must get advantage 0 and stay out of baselines.
    """


@component_kind("KL estimator", data_arguments=2)
def register_kl_estimators(register: Register[KLEstimator]) -> None:
    """Register per-token KL estimators: ``register(name, fn)``.

    ``fn(logps: Tensor (B,T), ref_logps: Tensor (B,T)) -> Tensor (B,T)``: the per-token
    estimate of KL(pi || pi_ref) at the sampled tokens. It must be differentiable in
    ``logps``; the placement decides whether that gradient is used.
    """


@component_kind("policy loss", data_arguments=4)
def register_policy_losses(register: Register[PolicyLoss]) -> None:
    """Register policy losses: ``register(name, fn)``.

    ``fn(logps, old_logps, advantages, mask, **params) -> (per_token_loss, metrics)``.
    ``logps`` and ``old_logps`` are ``(B,T)``, ``advantages`` is ``(B,1)`` or ``(B,T)``,
    ``mask`` is ``(B,T)``. ``per_token_loss`` is ``(B,T)`` or ``(B,1)``, not yet masked
    or reduced. ``metrics`` maps a name to a ``(B,T)`` or ``(B,1)`` tensor that the
    adapter reduces to a masked mean over the global batch (for example clip fractions).
    Keyword parameters are bound by name: explicit component params first, then the
    trainer config field of the same name, then the function default.
    """


@component_kind("value loss", data_arguments=4)
def register_value_losses(register: Register[ValueLoss]) -> None:
    """Register critic (value-function) losses: ``register(name, fn)``.

    ``fn(values, old_values, returns, mask, **params) -> (per_token_loss, metrics)``, all
    ``(B,T)``: the critic's values now, its values at rollout time, the value targets
    (returns), the completion mask. ``per_token_loss`` is not yet masked, reduced or
    weighted (the trainer multiplies by ``vf_coef``); ``metrics`` as for policy losses.
    """


@component_kind("loss aggregation", data_arguments=3)
def register_loss_aggregations(register: Register[LossAggregation]) -> None:
    """Register loss aggregations: ``register(name, fn)``.

    ``fn(per_token_loss: Tensor, mask: Tensor (B,T), ctx: rlplug.AggregationContext)
    -> scalar Tensor``. The result is what ``backward()`` is called on, so it already
    carries the division by the gradient-accumulation steps (``ctx``).
    """


@component_kind("sampling correction", data_arguments=5)
def register_sampling_corrections(register: Register[SamplingCorrection]) -> None:
    """Register sampling corrections: ``register(name, fn)``.

    ``fn(logps, old_logps, sampling_logps, advantages, mask, **params) -> (weights, metrics)``.
    ``logps`` (B,T) are the current policy's, ``old_logps`` (B,T) the policy's at generation
    time, ``sampling_logps`` (B,T) the sampler's (an inference engine such as vLLM) or
    ``None`` when the trainer sampled itself; ``advantages`` is (B,1) or (B,T), ``mask`` (B,T).
    ``weights`` is a detached (B,T) or (B,1) tensor that multiplies the policy loss per token
    (0 drops a token, a ratio reweights it), before the KL term and the aggregation.
    ``metrics`` is reduced like a policy loss's. Several corrections multiply.
    """


@component_kind("preference loss", data_arguments=1)
def register_preference_losses(register: Register[PreferenceLoss]) -> None:
    """Register preference losses: ``register(name, fn)``.

    ``fn(batch: rlplug.PreferenceBatch, **params) -> (losses: Tensor (B,), metrics: dict[str, Tensor])``.
    ``batch`` holds policy and reference log-probs (summed) for chosen and rejected
    responses with their token counts, the chosen NLL, and for unpaired data the
    per-example log-probs, labels and the KL reference point.
    """


@component_kind("reward function")
def register_reward_functions(register: Register[RewardFunction]) -> None:
    """Register reward functions: ``register(name, fn)``.

    ``fn(prompts, completions, **kwargs) -> list[float | None]``, TRL's reward-function
    signature: one value per completion, ``None`` for a completion it cannot score.
    Dataset columns arrive as keyword arguments.
    """


@component_kind("algorithm", named_objects=True)
def register_algorithms(register: Callable[[Algorithm], None]) -> None:
    """Register algorithm recipes: ``register(rlplug.Algorithm(...))``.

    A recipe names its trainer kind and its components, and gives default params.
    """


@component_kind("trainer kind", named_objects=True)
def register_trainer_kinds(register: Callable[[TrainerKind], None]) -> None:
    """Register trainer kinds: ``register(rlplug.TrainerKind(...))``.

    A trainer kind says how a recipe with ``trainer=<name>`` becomes a trainer: the
    adapter to build, the TRL config class its fields fill, and what a run of it reports.
    """
