"""Advantage estimators that several algorithm families share."""

from __future__ import annotations

import torch

from rlplug.core.rollout import Rollout


def group_mean(rollout: Rollout) -> torch.Tensor:
    """The group-mean baseline: A_i = R_i - mean_g(R), without any std division.

    REINFORCE with a baseline (Williams 1992) where the baseline is the mean reward of the
    completions of the same prompt; Dr.GRPO's advantage (Liu et al. 2025, "Understanding
    R1-Zero-Like Training", arXiv:2503.20783), which drops GRPO's std division because it
    weights easy and hard prompts unequally. NaN-aware: the mean runs over scorable
    completions and an unscorable one gets 0. Matches TRL's ``scale_rewards="none"`` bitwise.
    """
    rewards = rollout.grouped(rollout.sequence_rewards())
    advantages = rewards - torch.nanmean(rewards, dim=1, keepdim=True)
    return torch.nan_to_num(rollout.ungrouped(advantages), nan=0.0)
