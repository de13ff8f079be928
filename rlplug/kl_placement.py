"""Where the KL term enters the objective: the reward, the loss, or nowhere.

Pure tensor functions; the adapters call them. See the KL notes in the design docs for
which estimator and placement combinations have unbiased gradients.
"""

from __future__ import annotations

from typing import Callable

import torch

from rlplug.algorithm import KLSpec
from rlplug.components.kl import k3

KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class KLConfigError(ValueError):
    """A KL estimator and placement whose gradient is known to be wrong."""


def check_kl_spec(spec: KLSpec) -> None:
    """Refuse combinations that regularize nothing."""
    if spec.active and spec.placement == "loss" and spec.estimator == "k1":
        raise KLConfigError(
            "kl: k1 in the loss has expected gradient zero, so it regularizes nothing. "
            "Use `kl: {estimator: k1, placement: reward}` or `{estimator: k3, placement: loss}`."
        )


def reward_kl_token_rewards(
    spec: KLSpec, estimator: KLEstimator, sampling_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token rewards -coef * KL_t at the sampled tokens, detached and masked.

    Outcome estimators see them summed into the sequence reward (R - coef * sum_t KL_t),
    as in Ziegler et al. 2019 and TRL's RLOO; per-token estimators propagate them.
    """
    with torch.no_grad():
        return -spec.coef * estimator(sampling_logps, ref_logps) * mask


def loss_kl_term(
    spec: KLSpec,
    estimator: KLEstimator,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
) -> torch.Tensor:
    """coef * KL_t(logps, ref) [* pi/pi_old], the differentiated per-token loss term.

    With k3 and the token-level importance ratio this is TRL's GRPO KL term
    (``use_bias_correction_kl``), and its expected gradient is that of KL(pi||ref).
    """
    per_token_kl = estimator(logps, ref_logps)
    if spec.importance_ratio:
        per_token_kl = per_token_kl * torch.exp(logps - old_logps)
    return spec.coef * per_token_kl


def kl_value(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The per-token KL value to log: k3, unbiased and non-negative, never differentiated."""
    with torch.no_grad():
        return k3(logps, ref_logps)
