"""Clipped policy-gradient losses of the GRPO family.

Each returns ``(per_token_loss, metrics)``; metrics are indicator tensors that the
adapter turns into masked means over the global batch.
"""

from __future__ import annotations

import torch

from rlplug import clipped_surrogate


def ppo_clip(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate per token, with separate low and high clip ranges.

    l_t = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t), rho_t = pi/pi_old.
    Schulman et al. 2017 (arXiv:1707.06347); clip-higher from DAPO (Yu et al. 2025,
    arXiv:2503.14476); optional two-sided bound ``delta`` on rho from INTELLECT-2
    (arXiv:2505.07291). ``epsilon_high=None`` means symmetric. Matches TRL's grpo/dapo/bnpo loss.
    """
    ratio = torch.exp(logps - old_logps)
    return clipped_surrogate(ratio, advantages, epsilon, epsilon_high, delta)


def gspo_clip(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 3e-4,
    epsilon_high: float | None = 4e-4,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO: the clipped surrogate on the sequence-level, length-normalized ratio.

    s_i = exp((1/|o_i|) sum_t log(pi_t / pi_old_t)); l_i = -min(s_i A_i, clip(s_i, 1 - eps_low,
    1 + eps_high) A_i). Zheng et al. 2025, "Group Sequence Policy Optimization"
    (arXiv:2507.18071). Returns a (B, 1) loss. Matches TRL's ``importance_sampling_level="sequence"``.
    """
    log_ratio = ((logps - old_logps) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    ratio = torch.exp(log_ratio.unsqueeze(-1))
    return clipped_surrogate(ratio, advantages, epsilon, epsilon_high, delta)


def cispo(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_high: float | None = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO: REINFORCE weighted by a clipped, detached importance ratio.

    l_t = -sg(min(rho_t, eps_max)) A_t log pi_t. MiniMax-M1 (arXiv:2506.13585); the
    ``eps_max`` form of ScaleRL (arXiv:2510.13786). No token's gradient is ever dropped;
    only its weight is capped. Matches TRL's ``loss_type="cispo"``.
    """
    ratio = torch.exp(logps - old_logps)
    capped = torch.clamp(ratio, max=epsilon_high).detach()
    per_token_loss = -capped * advantages * logps
    return per_token_loss, {"cispo_clip_ratio": ((ratio > epsilon_high) & (advantages > 0)).float()}
