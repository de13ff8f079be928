"""Trainer kinds: how a recipe with ``trainer=<name>`` becomes a trainer, as data.

A kind is registered like any component (``register_trainer_kinds``), so a new trainer
is one adapter module plus one registration; the API, the ``rlplug train`` application,
its report and the embedded demo read everything kind-specific from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

PreferenceData = Literal["paired", "unpaired"]


def lazy_attribute(module: str, name: str) -> Callable[[], Any]:
    """``module.name``, imported on first call: registering a kind imports no trainer."""

    def load() -> Any:
        return getattr(importlib.import_module(module), name)

    load.__qualname__ = f"lazy {module}.{name}"
    return load


@dataclass(frozen=True)
class TrainerKind:
    """One trainer kind.

    - ``trainer_class()``: the adapter class, called as ``cls(algorithm=recipe, model=...,
      args=config, train_dataset=..., ...)``.
    - ``config_class()``: the TRL config class whose fields a user sets.
    - ``beta_is_kl_coef``: TRL's ``beta`` is the KL coefficient (online trainers) rather than
      the loss's own temperature (preference trainers, where it reaches the loss by name).
    - ``takes_reward_funcs``: the trainer scores completions with reward functions.
    - ``preference_data``: ``"paired"`` or ``"unpaired"`` for trainers of preference data.
    - ``report_headline``: summary name -> logged key, reported first and last in a run.
    - ``report_panels``: (logged key, axis label) for each panel of the run's plot.
    - ``embedded_defaults``: config fields measured for the built-in tiny model and task.
    """

    name: str
    trainer_class: Callable[[], type]
    config_class: Callable[[], type]
    beta_is_kl_coef: bool = True
    takes_reward_funcs: bool = True
    preference_data: PreferenceData | None = None
    report_headline: dict[str, str] = field(default_factory=lambda: {"loss": "loss"})
    report_panels: tuple[tuple[str, str], ...] = (("loss", "training loss"),)
    embedded_defaults: dict[str, Any] = field(default_factory=dict)
