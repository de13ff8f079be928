"""Critic losses: PPO's clipped value loss, plain squared error and Huber."""

from __future__ import annotations

import torch


def clipped_value(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss: 1/2 max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -eps_v, eps_v).

    Schulman et al. 2017 (arXiv:1707.06347) as in OpenAI baselines' PPO2 and TRL's former
    PPOTrainer (``cliprange_value`` 0.2). The max is pessimistic: once V has moved past
    V_old +- eps_v towards R, the clipped (larger) error is selected and the gradient is zero;
    a move away from R keeps its gradient. Metric ``value/clip_frac``: the clipped term won.
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    per_token_loss = 0.5 * torch.max(unclipped_error, clipped_error)
    return per_token_loss, {"value/clip_frac": (clipped_error > unclipped_error).float()}


def mse_value(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain squared error 1/2 (V - R)^2, no clipping (A2C, Mnih et al. 2016, arXiv:1602.01783)."""
    return 0.5 * (values - returns) ** 2, {}


def huber_value(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    huber_delta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Huber loss (Huber 1964): 1/2 e^2 for |e| <= delta, else delta (|e| - delta/2), e = V - R."""
    return torch.nn.functional.huber_loss(values, returns, reduction="none", delta=huber_delta), {}
