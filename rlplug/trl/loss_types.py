"""TRL's ``loss_type`` as rlplug recipes: data, so a TRL GRPO config works unchanged.

Precedence, first that applies:

1. rlplug component names given explicitly (``policy_loss``, ``aggregation``) win; they are
   applied to the recipe after this selection.
2. ``algorithm`` given explicitly: that recipe. If TRL's ``loss_type`` is given as well and
   names a different policy loss or aggregation, that is contradictory and refused.
3. Only ``loss_type`` given: the recipe it maps to below, without the recipe's
   ``config_defaults``: TRL's fields keep TRL's defaults, so the run is the one TRL would do
   (``loss_type: dapo`` keeps ``epsilon_high = epsilon``, where ``algorithm: dapo`` sets 0.28).
4. Neither: ``grpo`` (rlplug's default; TRL's default ``loss_type="dapo"`` is not applied
   unless set).

``importance_sampling_level`` is TRL's field of the same name, bound to every policy loss
that takes it (``ppo_clip``, ``cispo``, ``sapo``), so ``loss_type: cispo`` with
``importance_sampling_level: sequence`` is sequence-level CISPO.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_ALGORITHM = "grpo"


@dataclass(frozen=True)
class LossType:
    """What one TRL ``loss_type`` is in rlplug: a recipe, and the components that make it so."""

    algorithm: str
    policy_losses: tuple[str, ...]
    """Policy losses that are this loss type (the recipe's first); gspo_clip is ppo_clip at sequence level."""
    aggregation: str


_PPO_FAMILY = ("ppo_clip", "gspo_clip")

LOSS_TYPES: dict[str, LossType] = {
    "grpo": LossType("grpo", _PPO_FAMILY, "sequence_mean_token_mean"),
    "dr_grpo": LossType("dr_grpo", _PPO_FAMILY, "constant_normalizer"),
    "dapo": LossType("dapo", _PPO_FAMILY, "global_token_mean"),
    "bnpo": LossType("bnpo", _PPO_FAMILY, "local_token_mean"),
    "cispo": LossType("cispo", ("cispo",), "global_token_mean"),
    "sapo": LossType("sapo", ("sapo",), "sequence_mean_token_mean"),
    "luspo": LossType("luspo", _PPO_FAMILY, "sequence_sum_mean"),
    "vespo": LossType("vespo", ("vespo",), "global_token_mean"),
}

TOKEN_SUMMING_AGGREGATIONS = frozenset({"local_token_mean", "constant_normalizer", "global_token_mean"})
"""Aggregations that sum per-token terms over the batch: a sequence-level loss gets weighted by length there."""

SEQUENCE_LEVEL_POLICY_LOSSES = frozenset({"gspo_clip"})
"""Policy losses whose ratio is always per sequence (others are sequence-level when bound so)."""


def loss_type_entry(loss_type: str) -> LossType:
    """The mapping of a TRL ``loss_type``; one-line error naming the field otherwise."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    return LOSS_TYPES[loss_type]


def select_algorithm(algorithm: Any, loss_type: str | None) -> Any:
    """The recipe (name or Algorithm) to use, given what the user set explicitly (None: not set)."""
    if algorithm is None:
        return loss_type_entry(loss_type).algorithm if loss_type is not None else DEFAULT_ALGORITHM
    return algorithm


def as_trl_loss_type(recipe: Any) -> Any:
    """The recipe as TRL's ``loss_type`` selects it: its config defaults dropped (TRL's own apply)."""
    return replace(recipe, config_defaults={})


def check_loss_type_matches(recipe: Any, loss_type: str) -> None:
    """Refuse an explicit ``algorithm`` whose recipe contradicts an explicit ``loss_type``."""
    entry = loss_type_entry(loss_type)
    if recipe.policy_loss not in entry.policy_losses or recipe.aggregation != entry.aggregation:
        raise ValueError(
            f"algorithm {recipe.name!r} ({recipe.policy_loss} + {recipe.aggregation}) contradicts "
            f"loss_type={loss_type!r} ({entry.policy_losses[0]} + {entry.aggregation}); set only one of them"
        )


def is_sequence_level(policy_loss: Any) -> bool:
    """Whether a bound policy loss computes one importance ratio per sequence."""
    return (
        policy_loss.name in SEQUENCE_LEVEL_POLICY_LOSSES
        or policy_loss.params.get("importance_sampling_level") == "sequence"
    )


def warn_on_length_weighting(policy_loss: Any, aggregation: Any) -> None:
    """TRL's warning for a sequence-level ratio under a token-summing aggregation, in rlplug's terms."""
    if is_sequence_level(policy_loss) and aggregation.name in TOKEN_SUMMING_AGGREGATIONS:
        warnings.warn(
            f"With a sequence-level importance ratio ({policy_loss.name}), the {aggregation.name!r} aggregation sums "
            "per-token contributions, which effectively weights each sequence by its completion length instead of "
            "optimizing the per-sequence objective. To reproduce the GSPO paper's setup, use the "
            "'sequence_mean_token_mean' aggregation (TRL: set `loss_type='grpo'`).",
            stacklevel=3,
        )


def warn_on_unused_sampling_level(policy_loss: Any, importance_sampling_level: str) -> None:
    """TRL's field ``importance_sampling_level="sequence"`` reaches only losses that take it; say so otherwise."""
    if importance_sampling_level != "token" and "importance_sampling_level" not in policy_loss.params:
        warnings.warn(
            f"policy_loss {policy_loss.name!r} sets its own importance-sampling level; "
            f"importance_sampling_level={importance_sampling_level!r} has no effect on it",
            stacklevel=3,
        )


def matching_loss_type(policy_loss: Any, aggregation: Any) -> str | None:
    """The TRL ``loss_type`` these components are, if any (so TRL's own checks see the right one)."""
    for name, entry in LOSS_TYPES.items():
        if policy_loss.name == entry.policy_losses[0] and aggregation.name == entry.aggregation:
            return name
    return None
