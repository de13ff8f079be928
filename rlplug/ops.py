"""Small tensor helpers shared by components."""

from __future__ import annotations

import torch


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


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (0 if none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
