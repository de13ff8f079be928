"""rlplug: plugin framework for RL post-training of language models on TRL."""

from __future__ import annotations

from typing import Any

from rlplug.algorithm import Algorithm, KLSpec
from rlplug.components.aggregation import AggregationContext
from rlplug.hookspecs import hookimpl
from rlplug.plugins import get_registry, load_plugins
from rlplug.registry import DuplicateComponentError, UnknownComponentError
from rlplug.rollout import Rollout

__version__ = "0.1.0"

__all__ = [
    "AggregationContext",
    "Algorithm",
    "DuplicateComponentError",
    "KLSpec",
    "Rollout",
    "UnknownComponentError",
    "build_trainer",
    "get_registry",
    "hookimpl",
    "load_plugins",
]


def __getattr__(name: str) -> Any:
    # The trainer API imports TRL; keep `import rlplug` light.
    if name == "build_trainer":
        from rlplug.api import build_trainer

        return build_trainer
    raise AttributeError(f"module 'rlplug' has no attribute {name!r}")
