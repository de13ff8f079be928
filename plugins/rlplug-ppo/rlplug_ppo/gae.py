"""Per-token rewards and Generalized Advantage Estimation over a critic's values."""

from __future__ import annotations

import torch

from rlplug import Rollout


def _check_right_padded(mask: torch.Tensor) -> None:
    if bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("gae needs a right-padded completion_mask (1s then 0s in every row)")


def per_token_rewards(rollout: Rollout) -> torch.Tensor:
    """(B, T) rewards r_t = -beta KL_t for t < T_i and r_{T_i} = R_i - beta KL_{T_i}, 0 on padding.

    The RLHF reward of Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022): the outcome
    reward R arrives at the last completion token, the KL penalty (``rollout.token_rewards``,
    -beta KL_t when KL is placed in the reward, plus any process rewards) at every token.
    An unscorable completion (R NaN) gets NaN at its last token.
    """
    mask = rollout.completion_mask.to(rollout.rewards.dtype)
    rewards = torch.zeros_like(mask) if rollout.token_rewards is None else rollout.token_rewards * mask
    lengths = rollout.completion_mask.sum(-1).long()
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    rewards = rewards.clone()
    rewards[rows, lengths[rows] - 1] += rollout.rewards[rows]
    return rewards


def gae(rollout: Rollout, gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    """Generalized Advantage Estimation (Schulman et al. 2016, arXiv:1506.02438), per token.

    delta_t = r_t + gamma V(s_{t+1}) - V(s_t), with V = 0 after the last token;
    A_t = sum_{l>=0} (gamma lam)^l delta_{t+l} = delta_t + gamma lam A_{t+1}.
    r_t from :func:`per_token_rewards`, V from ``rollout.values`` (the critic at rollout
    time). lam=0 gives TD(0), A_t = delta_t; lam=1 gives Monte Carlo, A_t = G_t - V(s_t).
    The value targets are the returns A_t + V(s_t) (the adapter adds them, before any
    whitening). Defaults are those of TRL's former PPOConfig (gamma 1, lam 0.95). Padding
    and unscorable completions get advantage 0. (B, T), in the values' dtype.
    """
    if rollout.values is None:
        raise ValueError("gae needs Rollout.values (the critic's values at rollout time); run it with a critic")
    mask = rollout.completion_mask.to(rollout.values.dtype)
    _check_right_padded(rollout.completion_mask)
    rewards = torch.nan_to_num(per_token_rewards(rollout).to(rollout.values.dtype), nan=0.0)
    values = rollout.values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages * rollout.scorable.unsqueeze(1).to(advantages.dtype)
