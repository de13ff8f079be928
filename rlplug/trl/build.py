"""One call from an algorithm name to a ready TRL trainer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rlplug.core.algorithm import Algorithm, KLSpec
from rlplug.core.plugins import get_registry
from rlplug.core.trainer_kinds import TrainerKind
from rlplug.components.rewards import RewardSpec, build_reward_functions


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


def trainer_kind_of(recipe: Algorithm) -> TrainerKind:
    """The registered trainer kind a recipe runs on."""
    return get_registry().get("trainer_kinds", recipe.trainer)


def _config_for(kind: TrainerKind, recipe: Algorithm, overrides: dict[str, Any]) -> Any:
    fields = {"output_dir": "rlplug-output", **recipe.config_defaults, **overrides}
    return kind.config_class()(**fields)


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
    logprob_chunk_size: int | str | None = "auto",
    **config_overrides: Any,
) -> Any:
    """Build a TRL trainer for ``algorithm`` with any component or TRL config field overridden.

    ``model`` is a hub id, a local path or a loaded model; ``peft_config`` a PEFT config
    (LoRA). ``config_overrides`` are fields of the TRL config of the algorithm's trainer
    (for online algorithms, ``trl.GRPOConfig``; paired preference, ``trl.DPOConfig``;
    unpaired preference, ``trl.KTOConfig``), e.g. ``learning_rate=1e-5, num_generations=8``.
    ``logprob_chunk_size`` (tokens; ``"auto"``: 128 when the vocabulary has >= 32768 entries, ``0``: off)
    chunks the LM head's log-probs on devices without TRL's Triton kernels (rlplug.trl.chunked_forward).
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
    kind = trainer_kind_of(recipe)
    if kind.beta_is_kl_coef:
        recipe = _kl_from_trl_fields(recipe, overrides, kl_given=kl is not None)
    if reward_funcs is not None and not kind.takes_reward_funcs:
        raise ValueError(f"algorithm {recipe.name!r} learns from a preference dataset; it takes no reward_funcs")
    args = _config_for(kind, recipe, overrides)
    rewards, reward_weights = build_reward_functions(reward_funcs, args) if reward_funcs is not None else (None, None)
    if reward_weights is not None:
        if args.reward_weights is not None:
            raise ValueError("give reward weights once: as `weight` in the rewards entries or as reward_weights, not both")
        args.reward_weights = reward_weights
    trainer_kwargs = {"reward_funcs": rewards} if kind.takes_reward_funcs else {}
    return kind.trainer_class()(
        algorithm=recipe,
        model=model,
        **trainer_kwargs,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        peft_config=peft_config,
        callbacks=callbacks,
        logprob_chunk_size=logprob_chunk_size,
    )
