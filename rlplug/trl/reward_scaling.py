"""TRL's reward-scaling fields, mapped onto advantage estimators.

``scale_rewards`` ("group" is the recipe's own estimator, "batch", "none"; TRL maps True/False
to "group"/"none") and ``multi_objective_aggregation="normalize_then_sum"`` (which, as in
TRL, takes precedence over ``scale_rewards``) replace a recipe's group-outcome estimator, so
a TRL config works unchanged. On a recipe with another estimator (RLOO, REINFORCE++,
process supervision) they contradict it and are refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rlplug.core.algorithm import Algorithm

# (TRL field, value) -> the estimator it selects, in order of precedence.
ADVANTAGE_FOR_TRL_FIELD: tuple[tuple[str, Any, str], ...] = (
    ("multi_objective_aggregation", "normalize_then_sum", "gdpo"),
    ("scale_rewards", "batch", "group_mean_batch_std"),
    ("scale_rewards", "none", "group_mean"),
)
GROUP_OUTCOME_ESTIMATORS: frozenset[str] = frozenset({"group_norm", "group_mean", "group_mean_batch_std", "gdpo"})


def advantage_from_trl_fields(algorithm: Algorithm, args: Any) -> Algorithm:
    """The recipe with the advantage estimator that TRL's reward-scaling fields select, if any."""
    for field_name, value, estimator in ADVANTAGE_FOR_TRL_FIELD:
        if getattr(args, field_name, None) != value:
            continue
        if algorithm.advantage == estimator:
            return algorithm
        if algorithm.advantage not in GROUP_OUTCOME_ESTIMATORS:
            raise ValueError(
                f"{field_name}={value!r} selects the advantage {estimator!r}, which contradicts algorithm "
                f"{algorithm.name!r}'s advantage {algorithm.advantage!r}; unset {field_name} or choose `advantage`"
            )
        return replace(algorithm, advantage=estimator)
    return algorithm
