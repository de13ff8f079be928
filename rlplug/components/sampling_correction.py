"""Sampling corrections: per-token weights on the policy loss for data that is off-policy.

Off-policyness has two sources (synchronous vs asynchronous RL): the policy moved since the
completions were generated (old -> current), and the sampler is not the trainer (an
inference engine's log-probs differ from the trainer's at the same weights, sampler -> old).
Each function returns ``(weights, metrics)``; the weights are detached and multiply the
per-token policy loss.
"""

from __future__ import annotations

import math

import torch

SAMPLER_IMPORTANCE_MODES: tuple[str, ...] = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def off_policy_sequence_mask(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    off_policy_mask_threshold: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Off-policy sequence masking: drop negative-advantage sequences that drifted too far.

    D_i = (1/|o_i|) sum_t (log pi_sampler(o_t) - log pi_theta(o_t)) over the completion's
    tokens; keep sequence i iff A_i >= 0 or D_i <= delta. DeepSeek-AI 2025, DeepSeek-V3.2
    (arXiv:2512.02556), Eq. 9. The sampler's log-probs are the
    inference engine's when given, else the policy's at generation time (``old_logps``).
    Tokens whose sampling log-prob is NaN add 0 to the sum. Returns a (B, 1) 0/1 mask.
    Matches TRL's ``off_policy_mask_threshold`` bitwise (its delta, e.g. 0.5).
    """
    if off_policy_mask_threshold is None:
        raise ValueError("off_policy_sequence_mask needs off_policy_mask_threshold (TRL's field, or its component params)")
    reference = old_logps if sampling_logps is None else sampling_logps
    divergence = torch.nan_to_num(reference - logps.detach(), nan=0.0)
    mean_divergence = (divergence * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    keep = ((advantages >= 0) | (mean_divergence <= off_policy_mask_threshold)).to(dtype=mask.dtype)
    return keep, {"off_policy_mask/dropped": 1.0 - keep.float()}


def sampler_importance_weights(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    vllm_importance_sampling_mode: str = "sequence_mask",
    vllm_importance_sampling_clip_min: float | None = None,
    vllm_importance_sampling_clip_max: float | None = 3.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Importance weights for the sampler/trainer mismatch, truncated or masked.

    r_t = pi_old(o_t) / pi_sampler(o_t) per token (``token_*``), or r_i = prod_t r_t per
    sequence (``sequence_*``, shape (B, 1)); tokens with a NaN sampling log-prob count as
    r_t = 1. ``*_truncate``: w = clip(r, C_min, C_max), truncated importance sampling (TIS;
    Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
    Training", fengyao.notion.site/off-policy-rl). ``*_mask``: w = r where C_min <= r <= C_max,
    else 0, masked importance sampling (MIS; Liu et al. 2025, "When Speed Kills Stability",
    yingru.notion.site). A missing bound is no bound. Without sampling log-probs (the trainer
    sampled), r = 1. Matches TRL's ``vllm_importance_sampling_correction`` with
    ``vllm_importance_sampling_mode``, ``vllm_importance_sampling_clip_min`` and ``_clip_max``
    bitwise.
    """
    if vllm_importance_sampling_mode not in SAMPLER_IMPORTANCE_MODES:
        raise ValueError(
            f"vllm_importance_sampling_mode must be one of {', '.join(SAMPLER_IMPORTANCE_MODES)}; "
            f"got {vllm_importance_sampling_mode!r}"
        )
    if sampling_logps is None:
        ones = torch.ones_like(mask[:, :1], dtype=old_logps.dtype)
        return ones, {"sampler_importance/masked": torch.zeros_like(ones)}
    log_ratio = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if vllm_importance_sampling_mode.startswith("sequence"):
        log_ratio = log_ratio.sum(dim=-1, keepdim=True)
    ratio = torch.exp(log_ratio)
    if vllm_importance_sampling_mode.endswith("truncate"):
        weights = torch.clamp(ratio, min=vllm_importance_sampling_clip_min, max=vllm_importance_sampling_clip_max)
        outside = (weights != ratio).float()
    else:
        low = -math.inf if vllm_importance_sampling_clip_min is None else vllm_importance_sampling_clip_min
        high = math.inf if vllm_importance_sampling_clip_max is None else vllm_importance_sampling_clip_max
        outside_bounds = (ratio < low) | (ratio > high)
        weights = ratio.masked_fill(outside_bounds, value=0.0)
        outside = outside_bounds.float()
    return weights.detach(), {"sampler_importance/masked": outside}
