"""rlplug: plugin framework for RL post-training of language models on TRL.

This module is the public surface that plugins import. It loads no plugin and imports
neither TRL, transformers nor datasets; ``build_trainer`` loads TRL on first use.
"""

from __future__ import annotations

from typing import Any

from rlplug.components.advantages import group_mean
from rlplug.components.clipping import clipped_surrogate
from rlplug.components.f_divergence import f_divergence_scores
from rlplug.components.stats import masked_mean, nanstd, reverse_cumsum
from rlplug.core.aggregation import AggregationContext
from rlplug.core.algorithm import Algorithm, KLSpec
from rlplug.core.hookspecs import hookimpl
from rlplug.core.plugins import get_registry, load_plugins
from rlplug.core.preference import PreferenceBatch, paired_reward_metrics, preference_loss, unpaired_reward_metrics
from rlplug.core.preference_combination import weighted_preference_loss
from rlplug.core.segments import SegmentBatch
from rlplug.core.registry import DuplicateComponentError, UnknownComponentError
from rlplug.core.rollout import Rollout
from rlplug.core.trainer_kinds import TrainerKind
from rlplug.core.version import __version__

__all__ = [
    "AggregationContext",
    "Algorithm",
    "DuplicateComponentError",
    "KLSpec",
    "PreferenceBatch",
    "Rollout",
    "SegmentBatch",
    "TrainerKind",
    "UnknownComponentError",
    "__version__",
    "build_trainer",
    "clipped_surrogate",
    "f_divergence_scores",
    "get_registry",
    "group_mean",
    "hookimpl",
    "load_plugins",
    "masked_mean",
    "nanstd",
    "paired_reward_metrics",
    "preference_loss",
    "reverse_cumsum",
    "unpaired_reward_metrics",
    "weighted_preference_loss",
]


def __getattr__(name: str) -> Any:
    if name == "build_trainer":
        from rlplug.trl.build import build_trainer

        return build_trainer
    raise AttributeError(f"module 'rlplug' has no attribute {name!r}")
