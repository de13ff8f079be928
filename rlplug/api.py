"""One call from an algorithm name to a ready TRL trainer."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any, Callable

from rlplug.algorithm import Algorithm, KLSpec
from rlplug.plugins import get_registry
from rlplug.rewards import RewardSpec, build_reward_functions


def resolve_algorithm(
    algorithm: str | Algorithm,
    *,
    advantage: str | None = None,
    policy_loss: str | None = None,
    aggregation: str | None = None,
    kl: KLSpec | dict[str, Any] | None = None,
    component_params: dict[str, dict[str, Any]] | None = None,
    preference_loss: str | None = None,
) -> Algorithm:
    """The recipe by name (or as given), with component names, KL spec and params overridden."""
    recipe = get_registry().get("algorithms", algorithm) if isinstance(algorithm, str) else algorithm
    if isinstance(kl, dict):
        kl = replace(recipe.kl, **kl)
    params = {slot: dict(values) for slot, values in recipe.component_params.items()}
    for slot, values in (component_params or {}).items():
        params.setdefault(slot, {}).update(values)
    return recipe.with_overrides(
        advantage=advantage, policy_loss=policy_loss, aggregation=aggregation, kl=kl, component_params=params,
        preference_loss=preference_loss,
    )


def _config_for(adapter: "Adapter", recipe: Algorithm, overrides: dict[str, Any]) -> Any:
    fields = {"output_dir": "rlplug-output", **recipe.config_defaults, **overrides}
    return adapter.config_class()(**fields)


def _kl_from_trl_fields(recipe: Algorithm, overrides: dict[str, Any], kl_given: bool) -> Algorithm:
    """TRL's ``beta`` and ``use_bias_correction_kl`` set the KL coefficient and ratio unless ``kl`` is given."""
    beta = overrides.pop("beta", None)
    bias_correction = overrides.pop("use_bias_correction_kl", None)
    if kl_given and (beta is not None or bias_correction is not None):
        raise ValueError("give the KL coefficient once: either `kl: {coef: ...}` or TRL's `beta`, not both")
    changes = {}
    if beta is not None:
        changes["coef"] = float(beta)
    if bias_correction is not None:
        changes["importance_ratio"] = bool(bias_correction)
    return replace(recipe, kl=replace(recipe.kl, **changes)) if changes else recipe


def build_trainer(
    algorithm: str | Algorithm = "grpo",
    *,
    model: Any,
    reward_funcs: list[RewardSpec] | RewardSpec | None = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    processing_class: Any = None,
    peft_config: Any = None,
    advantage: str | None = None,
    policy_loss: str | None = None,
    aggregation: str | None = None,
    preference_loss: str | None = None,
    kl: KLSpec | dict[str, Any] | None = None,
    component_params: dict[str, dict[str, Any]] | None = None,
    callbacks: list[Any] | None = None,
    **config_overrides: Any,
) -> Any:
    """Build a TRL trainer for ``algorithm`` with any component or TRL config field overridden.

    ``model`` is a hub id, a local path or a loaded model; ``peft_config`` a PEFT config
    (LoRA). ``config_overrides`` are fields of the TRL config of the algorithm's trainer
    (for online algorithms, ``trl.GRPOConfig``; paired preference, ``trl.DPOConfig``;
    unpaired preference, ``trl.KTOConfig``), e.g. ``learning_rate=1e-5, num_generations=8``.
    For online algorithms TRL's ``beta`` sets the KL coefficient; for preference algorithms it
    is the loss's own beta.

    >>> trainer = build_trainer("dapo", model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=[my_reward], train_dataset=ds, advantage="group_mean",
    ...     peft_config=LoraConfig(r=16, target_modules="all-linear"))
    """
    recipe = resolve_algorithm(
        algorithm, advantage=advantage, policy_loss=policy_loss, aggregation=aggregation, kl=kl,
        component_params=component_params, preference_loss=preference_loss,
    )
    overrides = dict(config_overrides)
    adapter = ADAPTERS.get(recipe.trainer)
    if adapter is None:
        raise NotImplementedError(f"algorithm {recipe.name!r} needs a {recipe.trainer!r} trainer, not available yet")
    if adapter.beta_is_kl_coef:
        recipe = _kl_from_trl_fields(recipe, overrides, kl_given=kl is not None)
    if reward_funcs is not None and not adapter.takes_reward_funcs:
        raise ValueError(f"algorithm {recipe.name!r} learns from a preference dataset; it takes no reward_funcs")
    args = _config_for(adapter, recipe, overrides)
    rewards, reward_weights = build_reward_functions(reward_funcs, args) if reward_funcs is not None else (None, None)
    if reward_weights is not None:
        if args.reward_weights is not None:
            raise ValueError("give reward weights once: as `weight` in the rewards entries or as reward_weights, not both")
        args.reward_weights = reward_weights
    return adapter.build(
        recipe,
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def _online_trainer(recipe: Algorithm, **kwargs: Any) -> Any:
    from rlplug.trl.grpo import RLPlugGRPOTrainer

    return RLPlugGRPOTrainer(algorithm=recipe, **kwargs)


def _lazy(module: str, name: str) -> Callable[[], Any]:
    """Import ``module.name`` on first use: building one trainer kind imports no other's TRL class."""

    def load() -> Any:
        return getattr(importlib.import_module(module), name)

    return load


def _preference_trainer(trainer_class: Callable[[], type]) -> Callable[..., Any]:
    def build(recipe: Algorithm, *, reward_funcs: None = None, **kwargs: Any) -> Any:
        return trainer_class()(algorithm=recipe, **kwargs)

    return build


@dataclass(frozen=True)
class Adapter:
    """How to build the trainer for one trainer kind.

    - ``build(recipe, **trainer_kwargs)``: the adapter trainer.
    - ``config_class()``: the TRL config class that ``config_overrides`` fill (imported lazily).
    - ``beta_is_kl_coef``: whether TRL's ``beta`` is the KL coefficient (online trainers) or,
      as in the preference trainers, the loss's own temperature, which reaches it by name.
    - ``takes_reward_funcs``: whether the trainer scores completions with reward functions.
    """

    build: Callable[..., Any]
    config_class: Callable[[], type]
    beta_is_kl_coef: bool = True
    takes_reward_funcs: bool = True


ADAPTERS: dict[str, Adapter] = {
    "online": Adapter(_online_trainer, _lazy("trl", "GRPOConfig")),
    "paired_preference": Adapter(
        _preference_trainer(_lazy("rlplug.trl.dpo", "RLPlugDPOTrainer")), _lazy("trl", "DPOConfig"),
        beta_is_kl_coef=False, takes_reward_funcs=False,
    ),
    "unpaired_preference": Adapter(
        _preference_trainer(_lazy("rlplug.trl.kto", "RLPlugKTOTrainer")), _lazy("trl", "KTOConfig"),
        beta_is_kl_coef=False, takes_reward_funcs=False,
    ),
}
