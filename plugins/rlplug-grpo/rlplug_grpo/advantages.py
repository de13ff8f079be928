"""Group-relative advantage estimators."""

from __future__ import annotations

import torch

from rlplug import Rollout, group_mean, nanstd, reverse_cumsum

__all__ = ["gdpo", "group_mean", "group_mean_batch_std", "group_norm", "group_norm_process"]


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


def group_norm_process(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """GRPO with process supervision: normalized step rewards, summed over the steps ahead.

    Shao et al. 2024, DeepSeekMath (arXiv:2402.03300) §4.1.3. Every step reward r_i^(j) of
    the group's completions is normalized by the mean and (Bessel-corrected) std of all of
    them, r~ = (r - mean(R)) / (std(R) + eps); then A_{i,t} = sum_{index(j) >= t} r~_i^(j).
    Returns (B, T): 0 after a completion's last step, at padding, and for unscorable
    completions, which stay out of the statistics; a group with fewer than two steps, or
    with all step rewards equal, gives 0.

    Steps are ``rollout.step_mask`` with rewards in ``rollout.token_rewards`` (reward
    functions returning per-step rewards; see rlplug.components.process_rewards). Outcome rewards and
    per-token rewards off the steps (KL in the reward) are refused: put the KL in the loss,
    as DeepSeekMath does, and return an outcome as a step at the last token.
    """
    if rollout.step_mask is None or rollout.token_rewards is None:
        raise ValueError(
            "group_norm_process needs per-step rewards: a reward function must return (token_index, reward) "
            "pairs or a per-token list for each completion"
        )
    mask = rollout.completion_mask.bool()
    scorable = rollout.scorable
    if bool((scorable & (rollout.rewards != 0)).any()):
        raise ValueError(
            "group_norm_process normalizes step rewards only, but some completions have an outcome reward; "
            "return it as a step at the last token, or choose an outcome estimator (group_norm)"
        )
    off_steps = mask & ~rollout.step_mask.bool() & (rollout.token_rewards != 0)
    if bool(off_steps.any()):
        raise ValueError(
            "group_norm_process found per-token rewards outside the steps (KL in the reward?); "
            "use `kl: {placement: loss}` with it"
        )
    steps = (rollout.step_mask.bool() & mask & scorable.unsqueeze(1)).to(rollout.token_rewards.dtype)
    rewards = rollout.grouped(rollout.token_rewards * steps)
    steps = rollout.grouped(steps)
    # Measured from the group's largest step reward, so equal step rewards give exactly 0.
    reference = rewards.masked_fill(steps == 0, -torch.inf).amax(dim=(1, 2), keepdim=True)
    reference = torch.where(torch.isfinite(reference), reference, torch.zeros_like(reference))
    rewards = (rewards - reference) * steps
    count = steps.sum(dim=(1, 2), keepdim=True)
    mean = rewards.sum(dim=(1, 2), keepdim=True) / count.clamp(min=1.0)
    squared = (((rewards - mean) * steps) ** 2).sum(dim=(1, 2), keepdim=True)
    std = torch.where(count > 1, torch.sqrt(squared / (count - 1).clamp(min=1.0)), torch.zeros_like(squared))
    normalized = (rewards - mean) / (std + std_epsilon) * steps
    advantages = reverse_cumsum(normalized)
    return rollout.ungrouped(advantages) * mask


def group_mean_batch_std(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """Group baseline, batch scale: A_i = (R_i - mean_g(R)) / (std_batch(R) + eps).

    The mean runs over the completions of the same prompt, the (Bessel-corrected) std over
    the whole batch, so easy prompts (small group std) are not up-weighted. Liu et al. 2025,
    "Tricks or Traps? A Deep Dive into RL for LLM Reasoning" (Lite PPO, arXiv:2508.08221);
    Hu et al. 2025, REINFORCE++. NaN-aware; unscorable completions get 0. Matches TRL's
    ``scale_rewards="batch"`` bitwise.
    """
    rewards = rollout.sequence_rewards()
    mean = torch.nanmean(rollout.grouped(rewards), dim=1, keepdim=True)
    centered = rollout.ungrouped(rollout.grouped(rewards) - mean)
    std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    return torch.nan_to_num(centered / (std + std_epsilon), nan=0.0)


def gdpo(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """GDPO: normalize each reward function within the group, sum with weights, normalize over the batch.

    r~_ik = (r_ik - mean_g(r_k)) / (std_g(r_k) + eps); S_i = sum_k w_k r~_ik;
    A_i = (S_i - mean_batch(S)) / (std_batch(S) + eps). "GDPO: Group reward-Decoupled
    Normalization Policy Optimization for Multi-reward RL Optimization" (arXiv:2601.05242).
    Each function's scale stops mattering, so one reward cannot drown the others. NaN
    rewards stay out of the statistics; a completion no function scored gets 0. Matches
    TRL's ``multi_objective_aggregation="normalize_then_sum"`` bitwise. Needs the rollout's
    ``rewards_per_func`` and ``reward_weights``; per-token rewards are refused.
    """
    if rollout.rewards_per_func is None or rollout.reward_weights is None:
        raise ValueError("gdpo needs the rollout's rewards_per_func and reward_weights (one column per reward function)")
    if rollout.token_rewards is not None:
        raise ValueError("gdpo normalizes outcome rewards per function; it takes no per-token rewards (put the KL in the loss)")
    grouped = rollout.grouped(rollout.rewards_per_func)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped, dim=1).unsqueeze(1) if grouped.shape[1] > 1 else torch.zeros_like(mean)
    normalized = rollout.ungrouped((grouped - mean) / (std + std_epsilon))
    summed = (normalized * rollout.reward_weights.unsqueeze(0)).nansum(dim=1)
    summed[torch.isnan(rollout.rewards_per_func).all(dim=1)] = torch.nan
    summed_std = nanstd(summed) if summed.numel() > 1 else torch.zeros((), dtype=summed.dtype, device=summed.device)
    return torch.nan_to_num((summed - torch.nanmean(summed)) / (summed_std + std_epsilon), nan=0.0)
