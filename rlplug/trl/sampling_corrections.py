"""Sampling corrections on the online path: which are selected, and applying their weights.

TRL's own fields select the built-ins, so a TRL config works unchanged:
``off_policy_mask_threshold`` selects ``off_policy_sequence_mask``, and ``use_vllm`` with
``vllm_importance_sampling_correction`` selects ``sampler_importance_weights`` (its mode and
bounds bind from TRL's fields of the same names).
"""

from __future__ import annotations

from typing import Any

import torch

from rlplug.core.algorithm import Algorithm
from rlplug.core.resolve import BoundComponent, bind_component

SELECTED_BY_TRL_FIELDS: dict[str, Any] = {
    "off_policy_sequence_mask": lambda args: args.off_policy_mask_threshold is not None,
    "sampler_importance_weights": lambda args: bool(args.use_vllm and args.vllm_importance_sampling_correction),
}


def selected_sampling_corrections(algorithm: Algorithm, args: Any) -> list[BoundComponent]:
    """The recipe's corrections, then those TRL's fields select, each once, bound to their params."""
    names = list(dict.fromkeys(algorithm.sampling_corrections))
    names += [name for name, selects in SELECTED_BY_TRL_FIELDS.items() if selects(args) and name not in names]
    return [
        bind_component("sampling_corrections", name, algorithm.component_params.get(name, {}), args) for name in names
    ]


def apply_sampling_corrections(
    corrections: list[BoundComponent],
    per_token_loss: torch.Tensor,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    inputs: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Multiply the per-token loss by every correction's weights; collect their metrics."""
    sampling_logps = inputs.get("sampling_per_token_logps")
    metrics: dict[str, torch.Tensor] = {}
    for correction in corrections:
        weights, correction_metrics = correction(logps, old_logps, sampling_logps, advantages, mask)
        per_token_loss = per_token_loss * weights
        metrics.update(correction_metrics)
    return per_token_loss, metrics
