"""A weighted sum of preference losses as one preference loss (TRL's ``loss_type: [a, b]``
with ``loss_weights``; the MPO recipe). No TRL here."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from rlplug.core.preference import (
    SPEC_ATTRIBUTE,
    PreferenceBatch,
    PreferenceLossFn,
    PreferenceLossSpec,
    preference_loss_spec,
)


def _keyword_parameters(fn: PreferenceLossFn) -> list[inspect.Parameter]:
    return list(inspect.signature(fn).parameters.values())[1:]


def weighted_preference_loss(parts: Sequence[tuple[PreferenceLossFn, float]], name: str = "weighted") -> PreferenceLossFn:
    """The loss L_i = sum_k w_k * L_k,i over ``parts`` = [(loss_k, w_k), ...].

    Averaged over the batch this is sum_k w_k * mean_i L_k,i, TRL's combination of several
    ``loss_type``s (Wang et al., 2024, "Enhancing the Reasoning Ability of Multimodal Large
    Language Models via Mixed Preference Optimization", Eq. 2: MPO is 0.8 sigmoid + 0.2
    bco_pair + 1.0 sft). The parts share parameters by name (one ``beta`` for all); the
    combined signature is the union of theirs, each part receives the ones it takes. The
    spec reads what any part reads. Metrics: the union, the first part's value winning.
    """
    if not parts:
        raise ValueError("a weighted preference loss needs at least one part")
    specs = [preference_loss_spec(fn) for fn, _ in parts]
    if len({spec.data for spec in specs}) != 1:
        raise ValueError("a weighted preference loss cannot mix paired and unpaired losses")
    spec = PreferenceLossSpec(
        data=specs[0].data,
        needs_reference=any(spec.needs_reference for spec in specs),
        needs_kl_reference=any(spec.needs_kl_reference for spec in specs),
    )
    part_parameters = [[p.name for p in _keyword_parameters(fn)] for fn, _ in parts]
    union: dict[str, inspect.Parameter] = {}
    for fn, _ in parts:
        for parameter in _keyword_parameters(fn):
            union.setdefault(parameter.name, parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    def combined(batch: PreferenceBatch, **params: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | None = None
        metrics: dict[str, torch.Tensor] = {}
        for (fn, weight), names in zip(parts, part_parameters):
            losses, part_metrics = fn(batch, **{key: params[key] for key in names if key in params})
            total = weight * losses if total is None else total + weight * losses
            metrics = {**part_metrics, **metrics}
        return total, metrics

    batch_parameter = inspect.Parameter("batch", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    combined.__signature__ = inspect.Signature([batch_parameter, *union.values()])  # type: ignore[attr-defined]
    combined.__name__ = name
    combined.__doc__ = f"{' + '.join(f'{w} * {fn.__name__}' for fn, w in parts)}. " + (weighted_preference_loss.__doc__ or "")
    setattr(combined, SPEC_ATTRIBUTE, spec)
    return combined
