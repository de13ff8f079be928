"""Assembling the online batch: per-function rewards, process steps and KL rewards into a
:class:`rlplug.Rollout`. No TRL here: every online adapter gathers its tensors across
processes and calls :func:`assemble_rollout`."""

from __future__ import annotations

import torch

from rlplug.components.process_rewards import StepRewards
from rlplug.core.rollout import Rollout


def assemble_rollout(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    group_size: int,
    completion_mask: torch.Tensor,
    steps: StepRewards | None = None,
    kl_token_rewards: torch.Tensor | None = None,
) -> Rollout:
    """The global rollout.

    - ``rewards_per_func`` (B, F): NaN where a function could not score a completion.
    - ``reward_weights`` (F,): the outcome reward is ``R_i = sum_f w_f r_if`` over the functions
      that scored completion i, NaN when none did.
    - ``group_size``: consecutive completions answer the same prompt.
    - ``steps``: per-step rewards; a function that gave steps for a completion adds 0 to its
      outcome, and its weighted steps become per-token rewards.
    - ``kl_token_rewards`` (B, T): -beta * KL per token, for KL placed in the reward.
    """
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    outcome_per_func = rewards_per_func if steps is None else rewards_per_func.masked_fill(steps.is_process, 0.0)
    rewards = (outcome_per_func * reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    token_rewards = None if steps is None else steps.token_rewards
    if kl_token_rewards is not None:
        token_rewards = kl_token_rewards if token_rewards is None else token_rewards + kl_token_rewards
    return Rollout(
        rewards=rewards,
        rewards_per_func=rewards_per_func,
        group_ids=torch.arange(rewards.shape[0], device=rewards.device) // group_size,
        completion_mask=completion_mask,
        token_rewards=token_rewards,
        step_mask=None if steps is None else steps.step_mask,
        reward_weights=reward_weights.to(rewards_per_func.device),
    )
