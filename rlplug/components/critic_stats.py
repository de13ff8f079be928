"""Masked statistics of a critic: explained variance and advantage whitening."""

from __future__ import annotations

import torch

from rlplug.components.stats import masked_mean


def masked_variance(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The population variance over masked entries, mean((x - mean)^2)."""
    return masked_mean((values - masked_mean(values, mask)) ** 2, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 for a perfect critic, 0 for a constant one,
    negative for one worse than a constant (as logged by OpenAI baselines' PPO2). NaN if Var(R) = 0."""
    mask = mask.to(values.dtype)
    return 1.0 - masked_variance(returns - values, mask) / masked_variance(returns, mask)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries, 0 on padding (TRL's former PPO ``masked_whiten``)."""
    mask = mask.to(values.dtype)
    whitened = (values - masked_mean(values, mask)) * torch.rsqrt(masked_variance(values, mask) + eps)
    return whitened * mask
