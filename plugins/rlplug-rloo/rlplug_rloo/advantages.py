"""The leave-one-out baseline of RLOO."""

from __future__ import annotations

import torch

from rlplug import Rollout
from rlplug import nanstd


def rloo(rollout: Rollout, normalize_advantages: bool = False) -> torch.Tensor:
    """RLOO's advantage: A_i = R_i - (1/(K-1)) sum_{j != i} R_j, over the K completions of a prompt.

    Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al.
    2024, "Back to Basics" (arXiv:2402.14740). The baseline excludes the completion itself, so
    the estimate is unbiased; equivalently A_i = K/(K-1) (R_i - mean_g(R)).

    R is the sequence reward (outcome plus summed per-token rewards, e.g. KL in the reward).
    NaN-aware: an unscorable completion stays out of its siblings' baselines (K becomes the
    number of scorable ones) and gets advantage 0, as does a completion with no scorable
    sibling and every completion of a group of size 1. ``normalize_advantages`` then
    standardizes over the whole batch, (A - mean) / (std + 1e-4), as TRL's RLOOTrainer
    (default off there too). Same operations, in the same order, as TRL 1.16's RLOOTrainer.
    """
    rewards = rollout.grouped(rollout.sequence_rewards())
    if rewards.shape[1] > 1:
        scorable_counts = (~torch.isnan(rewards)).sum(dim=1, keepdim=True)
        group_sums = torch.nansum(rewards, dim=1, keepdim=True)
        baselines = (group_sums - rewards) / (scorable_counts - 1)
        advantages = rollout.ungrouped(rewards - baselines)
    else:
        advantages = torch.zeros_like(rollout.rewards)
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)
