"""Group-relative advantage estimators."""

from __future__ import annotations

import torch

from rlplug import Rollout
from rlplug.ops import nanstd


def group_norm(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """GRPO's group-normalized advantage: A_i = (R_i - mean_g(R)) / (std_g(R) + eps).

    Shao et al. 2024, DeepSeekMath (arXiv:2402.03300), outcome supervision. The mean and
    the (Bessel-corrected) std run over the completions of the same prompt, ignoring NaN
    (unscorable) rewards; unscorable completions get advantage 0. Matches TRL's
    ``scale_rewards="group"`` bitwise.
    """
    rewards = rollout.grouped(rollout.sequence_rewards())
    mean = torch.nanmean(rewards, dim=1, keepdim=True)
    std = nanstd(rewards, dim=1).unsqueeze(1) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    advantages = (rewards - mean) / (std + std_epsilon)
    return torch.nan_to_num(rollout.ungrouped(advantages), nan=0.0)


def group_mean(rollout: Rollout) -> torch.Tensor:
    """Dr.GRPO's advantage: A_i = R_i - mean_g(R), without the std division.

    Liu et al. 2025, "Understanding R1-Zero-Like Training" (arXiv:2503.20783): dividing by
    the group std weights easy and hard prompts unequally. NaN-aware like ``group_norm``;
    matches TRL's ``scale_rewards="none"`` bitwise.
    """
    rewards = rollout.grouped(rollout.sequence_rewards())
    advantages = rewards - torch.nanmean(rewards, dim=1, keepdim=True)
    return torch.nan_to_num(rollout.ungrouped(advantages), nan=0.0)
