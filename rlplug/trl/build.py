"""One call from an algorithm name to a ready TRL trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

from rlplug.core.algorithm import Algorithm, KLSpec, dynamic_sampling_spec
from rlplug.core.plugins import get_registry
from rlplug.core.trainer_kinds import TrainerKind
from rlplug.components.rewards import RewardSpec, build_reward_functions
from rlplug.trl.guards import FiniteGuard
from rlplug.trl.loss_types import as_trl_loss_type, check_loss_type_matches, select_algorithm


def resolve_algorithm(
    algorithm: str | Algorithm,
    *,
    advantage: str | None = None,
    policy_loss: str | None = None,
    aggregation: str | None = None,
    kl: KLSpec | dict[str, Any] | None = None,
    component_params: dict[str, dict[str, Any]] | None = None,
    preference_loss: str | None = None,
    sampling_corrections: list[str] | tuple[str, ...] | None = None,
    dynamic_sampling: Any = None,
) -> Algorithm:
    """The recipe by name (or as given), with component names, KL spec, params, sampling
    corrections (added to the recipe's) and dynamic sampling overridden."""
    recipe = get_registry().get("algorithms", algorithm) if isinstance(algorithm, str) else algorithm
    if isinstance(kl, dict):
        kl = replace(recipe.kl, **kl)
    params = {slot: dict(values) for slot, values in recipe.component_params.items()}
    for slot, values in (component_params or {}).items():
        params.setdefault(slot, {}).update(values)
    corrections = tuple(dict.fromkeys((*recipe.sampling_corrections, *(sampling_corrections or ())))) or None
    return recipe.with_overrides(
        advantage=advantage, policy_loss=policy_loss, aggregation=aggregation, kl=kl, component_params=params,
        preference_loss=preference_loss, sampling_corrections=corrections,
        dynamic_sampling=dynamic_sampling_spec(dynamic_sampling),
    )


def trainer_kind_of(recipe: Algorithm) -> TrainerKind:
    """The registered trainer kind a recipe runs on."""
    return get_registry().get("trainer_kinds", recipe.trainer)


def _config_for(kind: TrainerKind, recipe: Algorithm, overrides: dict[str, Any]) -> Any:
    fields = {"output_dir": "rlplug-output", **recipe.config_defaults, **overrides}
    return kind.config_class()(**fields)


def _kl_from_trl_fields(recipe: Algorithm, overrides: dict[str, Any], kl_given: bool) -> Algorithm:
    """TRL's ``beta`` and ``use_bias_correction_kl`` set the KL coefficient and ratio unless ``kl`` is given.

    ``beta`` also turns ``future_kl_correction`` off: a plain TRL config gets TRL's per-token k3 term.
    """
    beta = overrides.pop("beta", None)
    bias_correction = overrides.pop("use_bias_correction_kl", None)
    if kl_given and (beta is not None or bias_correction is not None):
        raise ValueError("give the KL coefficient once: either `kl: {coef: ...}` or TRL's `beta`, not both")
    changes = {}
    if beta is not None:
        changes["coef"] = float(beta)
        changes["future_kl_correction"] = False  # TRL's own per-token k3 term, for parity with GRPOTrainer
    if bias_correction is not None:
        changes["importance_ratio"] = bool(bias_correction)
    return replace(recipe, kl=replace(recipe.kl, **changes)) if changes else recipe


def fields_set_in(config: Any) -> dict[str, Any]:
    """The init fields of a TRL config object that differ from a default one of its class, plus
    ``output_dir`` and the precision/device fields (their defaults depend on the machine)."""
    always = ("output_dir", "bf16", "fp16", "use_cpu")
    default = type(config)(output_dir=config.output_dir, use_cpu=True, bf16=False)
    return {
        **{name: getattr(config, name) for name in always},
        **{
            field.name: getattr(config, field.name)
            for field in dataclasses.fields(config)
            if field.init and getattr(config, field.name) != getattr(default, field.name)
        },
    }


def build_trainer(
    algorithm: str | Algorithm | None = None,
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
    sampling_corrections: list[str] | None = None,
    dynamic_sampling: Any = None,
    callbacks: list[Any] | None = None,
    on_nonfinite: str = "error",
    trainer_inputs: dict[str, Any] | None = None,
    args: Any = None,
    logprob_chunk_size: int | str | None = "auto",
    **config_overrides: Any,
) -> Any:
    """Build a TRL trainer for ``algorithm`` with any component or TRL config field overridden.

    ``model`` is a hub id, a local path or a loaded model; ``peft_config`` a PEFT config
    (LoRA). ``config_overrides`` are fields of the TRL config of the algorithm's trainer
    (for online algorithms, ``trl.GRPOConfig``; paired preference, ``trl.DPOConfig``;
    unpaired preference, ``trl.KTOConfig``), e.g. ``learning_rate=1e-5, num_generations=8``.
    ``args`` may instead be a ready TRL config object (``trl.DPOConfig(loss_type="hinge", ...)``):
    the fields it sets differently from that class's defaults count as overrides, so a TRL
    config works unchanged; keyword overrides given as well win over it.
    ``logprob_chunk_size`` (tokens; ``"auto"``: 128 when the vocabulary has >= 32768 entries, ``0``: off)
    chunks the LM head's log-probs on devices without TRL's Triton kernels (rlplug.trl.chunked_forward).
    For online algorithms TRL's ``beta`` sets the KL coefficient; for preference algorithms it
    is the loss's own beta. ``on_nonfinite`` says what a NaN or infinite component output or
    gradient does: ``"error"`` stops the run before the optimizer step (the weights and the
    last checkpoint stay intact), ``"skip"`` drops that optimizer step with a warning
    (:class:`rlplug.trl.guards.FiniteGuard`).

    >>> trainer = build_trainer("dapo", model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=[my_reward], train_dataset=ds, advantage="group_mean",
    ...     peft_config=LoraConfig(r=16, target_modules="all-linear"))

    ``algorithm=None`` takes the recipe of TRL's ``loss_type`` when given, else ``grpo``; an
    explicit algorithm name that contradicts an explicit ``loss_type`` is refused (precedence:
    :mod:`rlplug.trl.loss_types`).
    """
    guard = FiniteGuard(on_nonfinite)  # checks the value before anything is built
    if args is not None:
        config_overrides = {**fields_set_in(args), **config_overrides}
    loss_type = config_overrides.get("loss_type")
    if isinstance(algorithm, str) and loss_type is not None:
        named = get_registry().get("algorithms", algorithm)
        if trainer_kind_of(named).takes_reward_funcs:  # preference configs have a loss_type of their own
            check_loss_type_matches(named, loss_type)
    chosen = select_algorithm(algorithm, loss_type)
    if algorithm is None and loss_type is not None:
        chosen = as_trl_loss_type(get_registry().get("algorithms", chosen))
    recipe = resolve_algorithm(
        chosen, advantage=advantage, policy_loss=policy_loss, aggregation=aggregation, kl=kl,
        component_params=component_params, preference_loss=preference_loss,
        sampling_corrections=sampling_corrections, dynamic_sampling=dynamic_sampling,
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
    trainer_kwargs.update(trainer_inputs or {})  # inputs a trainer kind takes besides TRL's, e.g. ppo's ptx_dataset
    trainer = kind.trainer_class()(
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
    return guard.attach(trainer)
