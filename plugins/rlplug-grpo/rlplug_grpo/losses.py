"""Clipped policy-gradient losses of the GRPO family.

Each returns ``(per_token_loss, metrics)``; metrics are indicator tensors that the
adapter turns into masked means over the global batch.
"""

from __future__ import annotations

import math

import torch

from rlplug import clipped_surrogate


def token_log_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(pi_t / pi_old_t) per token, (B, T)."""
    return logps - old_logps


def sequence_log_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1/|o_i|) sum_t log(pi_t / pi_old_t): GSPO's length-normalized sequence log-ratio, (B, 1)."""
    log_ratio = ((logps - old_logps) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return log_ratio.unsqueeze(-1)


# TRL's ``importance_sampling_level`` values; a loss that takes this parameter gets TRL's field bound to it.
LOG_RATIO_AT_LEVEL = {"token": token_log_ratio, "sequence": sequence_log_ratio}


def importance_ratio(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, importance_sampling_level: str
) -> torch.Tensor:
    """pi/pi_old per token (B, T) or, GSPO-style, per sequence (B, 1)."""
    if importance_sampling_level not in LOG_RATIO_AT_LEVEL:
        raise ValueError(
            f"importance_sampling_level must be one of {', '.join(LOG_RATIO_AT_LEVEL)}; got {importance_sampling_level!r}"
        )
    return torch.exp(LOG_RATIO_AT_LEVEL[importance_sampling_level](logps, old_logps, mask))


def ppo_clip(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
    importance_sampling_level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate per token, with separate low and high clip ranges.

    l_t = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t), rho_t = pi/pi_old.
    Schulman et al. 2017 (arXiv:1707.06347); clip-higher from DAPO (Yu et al. 2025,
    arXiv:2503.14476); optional two-sided bound ``delta`` on rho from INTELLECT-2
    (arXiv:2505.07291). ``epsilon_high=None`` means symmetric. Matches TRL's grpo/dapo/bnpo/
    dr_grpo/luspo loss; ``importance_sampling_level="sequence"`` uses GSPO's sequence ratio (B, 1).
    """
    ratio = importance_ratio(logps, old_logps, mask, importance_sampling_level)
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
    importance_sampling_level: str = "token",
    epsilon: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CISPO: REINFORCE weighted by a clipped, detached importance ratio.

    l_t = -sg(min(rho_t, eps_max)) A_t log pi_t. MiniMax-M1 (arXiv:2506.13585); the
    ``eps_max`` form of ScaleRL (arXiv:2510.13786). No token's gradient is ever dropped;
    only its weight is capped. Matches TRL's ``loss_type="cispo"``. Sequence-level CISPO
    (``importance_sampling_level="sequence"``): rho_i = exp((1/|o_i|) sum_t log(pi_t/pi_old_t)),
    one capped weight per sequence, as TRL computes it. ``epsilon_high=None`` caps at ``epsilon``,
    as TRL does when its ``epsilon_high`` is unset.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    ratio = importance_ratio(logps, old_logps, mask, importance_sampling_level)
    capped = torch.clamp(ratio, max=epsilon_high).detach()
    per_token_loss = -capped * advantages * logps
    return per_token_loss, {"cispo_clip_ratio": ((ratio > epsilon_high) & (advantages > 0)).float()}


def sapo(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
    importance_sampling_level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAPO: a smooth, temperature-controlled soft gate in place of the hard clip.

    l_t = -(4 / tau) sigmoid(tau (rho_t - 1)) A_t, tau = tau_pos if A_t > 0 else tau_neg.
    The gate's gradient is rho sigmoid'(.)*4 = rho at rho = 1 (on-policy it is the policy
    gradient) and fades smoothly as rho leaves 1. Gao et al. 2025, "Soft Adaptive Policy
    Optimization" (arXiv:2511.20347). Matches TRL's ``loss_type="sapo"``.
    """
    ratio = importance_ratio(logps, old_logps, mask, importance_sampling_level)
    temperatures = torch.where(advantages > 0, sapo_temperature_pos, sapo_temperature_neg)
    soft_ratio = torch.sigmoid(temperatures * (ratio - 1)) * 4 / temperatures
    return -soft_ratio * advantages, {}


@torch.no_grad()
def vespo_gamma_weights(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    k_pos: float,
    lambda_pos: float,
    k_neg: float,
    lambda_neg: float,
) -> torch.Tensor:
    """phi(w) = e^lambda w^k e^(-lambda w) (so phi(1) = 1), w = prod_t pi_t/pi_old_t, per sequence (B, 1).

    Computed in log space with TRL's clamps (token log-ratios to [-20, 20], log w to
    [log 1e-8, 20]); k and lambda by the sign of the advantage (A >= 0: pos). Detached.
    """
    lower_clamp = math.log(1e-8)
    sequence_log_ratio_sum = torch.sum(torch.clamp(log_ratio, -20.0, 20.0) * mask, dim=-1, keepdim=True)
    log_w = torch.clamp(sequence_log_ratio_sum, lower_clamp, 20.0)
    w = torch.exp(log_w)
    non_negative = advantages >= 0
    k = torch.where(non_negative, k_pos, k_neg)
    lam = torch.where(non_negative, lambda_pos, lambda_neg).clamp(min=1e-4)
    log_phi = lam + k * log_w - lam * w
    return torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def vespo(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    vespo_k_pos: float = 2.0,
    vespo_lambda_pos: float = 3.0,
    vespo_k_neg: float = 3.0,
    vespo_lambda_neg: float = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VESPO: REINFORCE weighted by a detached Gamma-shaped function of the sequence ratio.

    l_t = -sg(phi(w_i)) A_i log pi_t, phi(w) = e^lambda w^k e^(-lambda w), w_i = prod_t pi_t/pi_old_t
    (see :func:`vespo_gamma_weights`). phi peaks at w = k/lambda and decays smoothly on both
    sides, a soft trust region on the whole sequence. "VESPO: Variational Sequence-level
    Soft Policy Optimization" (arXiv:2602.10693). Matches TRL's ``loss_type="vespo"`` (without
    vLLM's sampling correction, which is a separate component).
    """
    phi = vespo_gamma_weights(
        logps - old_logps, advantages, mask, vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg
    )
    return -phi * advantages * logps, {"vespo/phi_seq_mean": phi}


def gmpo(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.4,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GMPO: the geometric mean of token ratios, each clipped in log space, per sequence.

    c_it = clip(log rho_it, -eps_low, eps_high), taken only where it lowers the objective
    (min for A > 0, max for A < 0, PPO's pessimism in log space); l_i = -exp((1/|o_i|)
    sum_t c_it) A_i. Returns a (B, 1) loss. Zhao et al. 2025, "Geometric-Mean Policy
    Optimization" (arXiv:2507.20673); TRL ``experimental.gmpo.GMPOTrainer``.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    log_ratio = logps - old_logps
    clamped = torch.clamp(log_ratio, min=-epsilon, max=epsilon_high)
    clipped = torch.where(advantages > 0, torch.minimum(log_ratio, clamped), torch.maximum(log_ratio, clamped))
    log_weight = (clipped * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    per_sequence_loss = -torch.exp(log_weight).unsqueeze(-1) * advantages
    is_low_clipped = (log_ratio < -epsilon) & (advantages < 0)
    is_high_clipped = (log_ratio > epsilon_high) & (advantages > 0)
    metrics = {
        "clip_ratio/low_mean": is_low_clipped.float(),
        "clip_ratio/high_mean": is_high_clipped.float(),
        "clip_ratio/region_mean": (is_low_clipped | is_high_clipped).float(),
    }
    return per_sequence_loss, metrics
