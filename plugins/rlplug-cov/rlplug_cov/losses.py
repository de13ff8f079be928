"""Clip-Cov and KL-Cov: policy losses that restrain the tokens driving entropy collapse.

Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models" (arXiv:2505.22617): under policy gradient the entropy changes by about
-Cov(log pi(y_t), A_t), so a few tokens with a large covariance between their log-probability
and their advantage drive the collapse. Both losses compute the per-token centred product
cov_t = (A_t - mean(A)) (log pi_t - mean(log pi)) over the valid tokens of the micro-batch
and treat a small fraction of tokens differently. The semantics are those of verl's
``clip_cov`` / ``kl_cov`` policy losses (verl/trainer/ppo/core_algos.py).
"""

from __future__ import annotations

import torch

from rlplug import masked_mean


def token_covariance(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """cov_t = (A_t - mean_m(A)) (log pi_t - mean_m(log pi)), detached, (B, T); means over unmasked tokens."""
    advantages = advantages.expand_as(logps)
    logps = logps.detach()
    return (advantages - masked_mean(advantages, mask)) * (logps - masked_mean(logps, mask))


def clip_cov(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    clip_cov_ratio: float = 0.0002,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clip-Cov: PPO's clipped surrogate with the gradient of a few high-covariance tokens removed.

    l_t = c_t max(-rho_t A_t, -clip(rho_t, 1 - eps_low, 1 + eps_high) A_t), where c_t = 0 for
    max(1, floor(r N)) tokens drawn uniformly at random (torch's global RNG, as verl) among the
    valid tokens that PPO's clip did not already bind and whose cov_t lies in (lb, ub); c_t = 1
    otherwise. N: valid tokens; r: ``clip_cov_ratio``. Cui et al. 2025, arXiv:2505.22617, eq. 11.
    """
    if clip_cov_ratio <= 0:
        raise ValueError(f"clip_cov_ratio must be > 0; got {clip_cov_ratio!r}")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    advantages = advantages.expand_as(logps)
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    valid = mask > 0
    clipped_by_ppo = (clipped > unclipped) & valid
    covariance = token_covariance(logps, advantages, mask)
    eligible = (covariance > clip_cov_lb) & (covariance < clip_cov_ub) & valid & ~clipped_by_ppo
    candidates = torch.nonzero(eligible)
    count = max(int(clip_cov_ratio * mask.sum().item()), 1)
    chosen = candidates[torch.randperm(len(candidates))[:count].to(candidates.device)]
    keep = torch.ones_like(logps)
    keep[chosen[:, 0], chosen[:, 1]] = 0.0
    per_token_loss = torch.maximum(unclipped, clipped) * keep
    return per_token_loss, {"clip_cov/dropped_fraction": (keep == 0).float()}


def kl_cov(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_cov_ratio: float = 0.0002,
    ppo_kl_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-Cov: the unclipped surrogate plus a KL penalty on the top covariance tokens.

    l_t = -rho_t A_t + beta |log rho_t| [t in top-k(cov)], k = max(1, floor(r N)) over the N
    valid tokens, r = ``kl_cov_ratio``, beta = ``ppo_kl_coef``. No ratio clipping. Cui et al.
    2025, arXiv:2505.22617, eq. 12.
    """
    if kl_cov_ratio <= 0:
        raise ValueError(f"kl_cov_ratio must be > 0; got {kl_cov_ratio!r}")
    advantages = advantages.expand_as(logps)
    log_ratio = logps - old_logps
    per_token_loss = -advantages * torch.exp(log_ratio)
    valid = mask > 0
    selected = torch.zeros_like(valid)
    valid_count = int(valid.sum().item())
    if valid_count > 0:
        flat_valid = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
        covariance = token_covariance(logps, advantages, mask).reshape(-1)[flat_valid]
        top = torch.topk(covariance, max(1, int(valid_count * kl_cov_ratio)), largest=True).indices
        selected.view(-1)[flat_valid[top]] = True
        per_token_loss = per_token_loss + ppo_kl_coef * log_ratio.abs() * selected
    return per_token_loss, {"kl_cov/selected_fraction": selected.float()}
