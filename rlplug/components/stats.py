"""Small tensor statistics shared by components."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(m x) / max(sum(m), 1): the mean over the masked entries (0 for an empty mask)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def nanstd(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Standard deviation with Bessel's correction, ignoring NaN; NaN for fewer than 2 values.

    The same operations, in the same order, as TRL's ``nanstd``, so results match bitwise.
    """
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    variance = torch.nanmean((values - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(values), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction
    std = torch.sqrt(variance)
    if dim is None:
        return std.squeeze()
    return std.squeeze(dim)


def reverse_cumsum(values: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Discounted sums to the end along the last dimension: G_t = sum_{u>=t} gamma^(u-t) x_u."""
    if gamma == 1.0:
        return values.flip(-1).cumsum(-1).flip(-1)
    sums = torch.zeros_like(values)
    running = torch.zeros_like(values[..., 0])
    for t in reversed(range(values.shape[-1])):
        running = values[..., t] + gamma * running
        sums[..., t] = running
    return sums
