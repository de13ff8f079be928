"""TRL's ``loss_type`` (and ``loss_weights``) as rlplug preference losses, by table.

A TRL config that names a non-default ``loss_type`` picks the registered rlplug loss of the
table below, whatever the recipe's default loss; a list of types (with ``loss_weights``)
becomes their weighted sum. A recipe that names another loss than its trainer's default
conflicts with a non-default ``loss_type`` and is refused.
"""

from __future__ import annotations

from typing import Any

from rlplug.core.preference import PreferenceData, preference_loss_spec
from rlplug.core.preference_combination import weighted_preference_loss
from rlplug.core.resolve import BoundComponent, ComponentConfigError, PreferenceComponents, resolve_preference

# TRL DPOTrainer loss_type -> registered rlplug preference loss.
DPO_LOSS_TYPES: dict[str, str] = {
    "sigmoid": "dpo_sigmoid",
    "hinge": "dpo_hinge",
    "ipo": "ipo",
    "exo_pair": "exo_pair",
    "nca_pair": "nca_pair",
    "robust": "dpo_robust",
    "bco_pair": "bco_pair",
    "sppo_hard": "sppo_hard",
    "aot": "aot",
    "aot_unpaired": "aot_unpaired",
    "apo_zero": "apo_zero",
    "apo_down": "apo_down",
    "discopop": "discopop",
    "sft": "dpo_sft",
    "sigmoid_norm": "dpo_sigmoid_norm",
}
# TRL KTOTrainer loss_type -> registered rlplug preference loss.
KTO_LOSS_TYPES: dict[str, str] = {"kto": "kto", "apo_zero_unpaired": "apo_zero_unpaired"}


def trl_loss_types(config: Any) -> list[str]:
    loss_type = config.loss_type
    return [loss_type] if isinstance(loss_type, str) else list(loss_type)


def resolve_trl_preference(
    algorithm: Any, data: PreferenceData, config: Any, table: dict[str, str], default: str
) -> PreferenceComponents:
    """The recipe's preference loss, or the one TRL's ``loss_type``/``loss_weights`` name."""
    types = trl_loss_types(config)
    weights = getattr(config, "loss_weights", None)
    if types == [default] and weights is None:
        return resolve_preference(algorithm, data, config)
    unknown = [name for name in types if name not in table]
    if unknown:
        raise ComponentConfigError(
            f"loss_type {', '.join(map(repr, unknown))} has no rlplug preference loss; known: {', '.join(table)}"
        )
    names = [table[name] for name in types]
    single = len(names) == 1 and weights is None
    if algorithm.preference_loss not in (table[default], *(names if single else ())):
        raise ComponentConfigError(
            f"algorithm {algorithm.name!r} uses preference loss {algorithm.preference_loss!r} but the config's "
            f"loss_type is {types!r}; give the loss once (unset loss_type, or pick algorithm 'dpo'/'kto')"
        )
    parts = [resolve_preference(algorithm.with_overrides(preference_loss=name), data, config) for name in names]
    if single:
        return parts[0]
    weights = list(weights) if weights is not None else [1.0] * len(parts)
    combined = weighted_preference_loss(
        [(part.loss.fn, float(weight)) for part, weight in zip(parts, weights)], name="+".join(names)
    )
    params = {key: value for part in parts for key, value in part.loss.params.items()}
    loss = BoundComponent("preference_losses", combined.__name__, combined, params)
    return PreferenceComponents(
        algorithm=algorithm.with_overrides(preference_loss=combined.__name__), loss=loss,
        spec=preference_loss_spec(combined),
    )


def trl_name_of(loss_name: str, table: dict[str, str]) -> str | None:
    """The TRL ``loss_type`` of a registered rlplug loss, or None when TRL has none."""
    return {value: key for key, value in table.items()}.get(loss_name)
