"""The embedded default: the built-in tiny model on the built-in arithmetic task.

Its trainer settings are data, declared by each trainer kind (``TrainerKind.embedded_defaults``)
and a recipe (``Algorithm.embedded_defaults``), and sit *below* the recipe's own
``config_defaults`` and anything the user sets. The online ones were measured to learn on a
2-core CPU in one to two minutes (G=8, 16 prompts x 8 completions, LoRA r=16 at lr 1e-3).
"""

from __future__ import annotations

from typing import Any

from rlplug.core.algorithm import Algorithm
from rlplug.core.trainer_kinds import TrainerKind

# A user value for one name of a group makes the embedded default for the others moot.
_SHADOWING_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"gradient_checkpointing", "activation_checkpointing"}),
    frozenset({"beta", "use_bias_correction_kl"}),
)
_KL_FIELDS = frozenset({"beta", "use_bias_correction_kl"})


def embedded_trainer_fields(
    recipe: Algorithm, kind: TrainerKind, user_fields: dict[str, Any], user_kl_given: bool
) -> dict[str, Any]:
    """The embedded defaults that apply: the trainer kind's, then the recipe's own
    ``embedded_defaults``; not those the recipe's ``config_defaults``, the user, or a KL choice set."""
    defaults = {**kind.embedded_defaults, **recipe.embedded_defaults}
    shadowed = (set(recipe.config_defaults) - set(recipe.embedded_defaults)) | set(user_fields)
    for group in _SHADOWING_GROUPS:
        if group & set(user_fields):
            shadowed |= group
    if user_kl_given or recipe.kl.active:
        shadowed |= _KL_FIELDS
    return {name: value for name, value in defaults.items() if name not in shadowed}
