"""The REINFORCE family of advantage estimators, from the raw return to REINFORCE++.

Unscorable completions (NaN reward) get advantage 0 and stay out of every mean and std.
"""

from __future__ import annotations

import torch

from rlplug import Rollout, group_mean, reverse_cumsum


def reinforce(rollout: Rollout) -> torch.Tensor:
    """REINFORCE's raw return: A_i = R_i, no baseline.

    Williams 1992. R_i is the sequence reward (outcome plus summed per-token rewards).
    Unbiased but high-variance: with all-positive rewards every completion is reinforced.
    """
    return torch.nan_to_num(rollout.sequence_rewards(), nan=0.0)


reinforce_baseline = group_mean
"""REINFORCE with the group mean as baseline: A_i = R_i - mean_g(R) (Williams 1992); see
:func:`rlplug.group_mean`."""


def reinforce_pp(rollout: Rollout, gamma: float = 1.0, variance_epsilon: float = 1e-8) -> torch.Tensor:
    """REINFORCE++: KL-shaped per-token returns, whitened over the whole batch.

    r_t = token_rewards_t (e.g. -beta * k1_t from KL in the reward, process-step rewards),
    plus the outcome reward R at the completion's last token; G_t = sum_{u>=t} gamma^(u-t) r_u;
    A_t = (G_t - mean(G)) / sqrt(var(G) + eps), mean and (Bessel) variance over every masked
    token of the batch. Hu 2025, "REINFORCE++" (arXiv:2501.03262); the whitening of verl's
    ``compute_reinforce_plus_plus_outcome_advantage``. Returns (B, T), 0 at padding.
    """
    returns = _returns_to_go(rollout, rollout.rewards, gamma)
    return _whiten_over_batch(returns, _scorable_token_mask(rollout), variance_epsilon)


def reinforce_pp_baseline(rollout: Rollout, gamma: float = 1.0, variance_epsilon: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ with a group baseline: R_i - mean_g(R), then per-token returns and batch whitening.

    The outcome reward minus the mean outcome reward of the prompt's group is placed at the
    last token; per-token rewards (KL) are added and propagated as in ``reinforce_pp``;
    the returns are whitened over the batch's masked tokens. Hu 2025, "REINFORCE++"
    (arXiv:2501.03262), the "REINFORCE++-baseline" variant for grouped sampling.
    """
    outcome = rollout.grouped(rollout.rewards)
    centered = rollout.ungrouped(outcome - torch.nanmean(outcome, dim=1, keepdim=True))
    returns = _returns_to_go(rollout, centered, gamma)
    return _whiten_over_batch(returns, _scorable_token_mask(rollout), variance_epsilon)


def _scorable_token_mask(rollout: Rollout) -> torch.Tensor:
    return rollout.completion_mask.bool() & rollout.scorable.unsqueeze(1)


def _returns_to_go(rollout: Rollout, outcome: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{u>=t} gamma^(u-t) r_u, with the outcome added at each row's last masked token."""
    mask = rollout.completion_mask.to(outcome.dtype)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * mask.bool()).argmax(dim=1)
    rewards = torch.zeros_like(mask)
    if rollout.token_rewards is not None:
        rewards = rewards + rollout.token_rewards.to(outcome.dtype) * mask
    rewards[torch.arange(mask.shape[0], device=mask.device), last] += torch.nan_to_num(outcome, nan=0.0)
    return reverse_cumsum(rewards * mask, gamma)


def _whiten_over_batch(values: torch.Tensor, mask: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries (Bessel variance; 0 for one entry)."""
    weights = mask.to(values.dtype)
    count = weights.sum()
    mean = (values * weights).sum() / count.clamp(min=1.0)
    squared = ((values - mean) ** 2 * weights).sum()
    variance = squared / (count - 1) if count > 1 else torch.zeros_like(squared)
    return (values - mean) * torch.rsqrt(variance + variance_epsilon) * weights
