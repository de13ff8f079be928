"""PPO's clipped surrogate, shared by the clipped policy losses of every plugin."""

from __future__ import annotations

import torch


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float,
    epsilon_high: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), with its clip-fraction metrics.

    Schulman et al. 2017 (arXiv:1707.06347); clip-higher (``epsilon_high``) from DAPO
    (arXiv:2503.14476); the optional upper bound ``delta`` on rho from INTELLECT-2
    (arXiv:2505.07291). ``epsilon_high=None`` is symmetric. The operation order is TRL's,
    so losses built on it match TRL's trainers bitwise. ``rho`` may be per token (B, T) or
    per sequence (B, 1).
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)
    per_token_loss = -torch.min(ratio * advantages, clipped_ratio * advantages)
    is_low_clipped = (ratio < 1 - epsilon) & (advantages < 0)
    is_high_clipped = (ratio > 1 + epsilon_high) & (advantages > 0)
    metrics = {
        "clip_ratio/low_mean": is_low_clipped.float(),
        "clip_ratio/high_mean": is_high_clipped.float(),
        "clip_ratio/region_mean": (is_low_clipped | is_high_clipped).float(),
    }
    return per_token_loss, metrics
