"""Entropy regularization: the high-entropy token filter, the entropy bonus and its adaptive coefficient.

Pure tensor math; the online adapter gathers across processes and calls these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def high_entropy_mask(
    entropies: torch.Tensor, mask: torch.Tensor, all_valid_entropies: torch.Tensor, top_entropy_quantile: float
) -> torch.Tensor:
    """Keep only the tokens in the top ``top_entropy_quantile`` of entropy: H_t >= q_(1 - rho)(H).

    ``all_valid_entropies`` is the 1-D tensor of every unmasked token's entropy in the
    global micro-batch (all processes); its (1 - rho) quantile is the threshold. Padding
    is never kept. Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens
    Drive Effective RL for LLM Reasoning" (arXiv:2506.01939); TRL ``top_entropy_quantile``.
    Returns a boolean (B, T) mask.
    """
    if all_valid_entropies.numel() == 0:
        return torch.zeros_like(entropies, dtype=torch.bool)
    threshold = torch.quantile(all_valid_entropies, 1 - top_entropy_quantile)
    return ((entropies * mask.float()) >= threshold) & mask.bool()


def entropy_bonus_term(
    entropies: torch.Tensor, mask: torch.Tensor, coef: float, accumulation_steps: float
) -> torch.Tensor:
    """The term added to the loss: -coef * H_mean / accumulation_steps, H_mean = sum_t H_t m_t / sum_t m_t.

    Maximizes the mean per-token entropy of the tokens ``mask`` keeps (the policy gradient
    tokens), independent of how the policy loss aggregates. Williams & Peng 1991; the
    maximum-entropy bonus of A3C (Mnih et al. 2016, arXiv:1602.01783); TRL ``entropy_coef``.
    """
    mean_entropy = (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation_steps
    return -coef * mean_entropy


@dataclass
class AdaptiveEntropyController:
    """Skywork-OR1's adaptive entropy coefficient (He et al. 2025, arXiv:2505.22312).

    After each optimizer step, with H the step's mean token entropy: coef <- min(coef + delta,
    coef_max) if H <= target, else max(coef - delta, coef_min). The bonus is applied only
    while the last measured H <= target. TRL ``use_adaptive_entropy`` and its fields
    (``entropy_target``, ``entropy_coef_delta``, ``entropy_coef_min``, ``entropy_coef_max``).
    """

    coef: float
    target: float
    delta: float
    coef_min: float
    coef_max: float
    last_entropy: float = math.inf

    def applied_coef(self) -> float:
        """The coefficient the current step uses: coef while the last entropy is at or below target, else 0."""
        return self.coef if self.last_entropy <= self.target else 0.0

    def update(self, entropy: float) -> None:
        """Move the coefficient one step toward restoring ``entropy`` to the target."""
        if entropy <= self.target:
            self.coef = min(self.coef + self.delta, self.coef_max)
        else:
            self.coef = max(self.coef - self.delta, self.coef_min)
        self.last_entropy = entropy
