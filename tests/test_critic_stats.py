"""The critic's statistics (rlplug.components.critic_stats): hand-computed values, masking, negative controls."""

from __future__ import annotations

import torch

from rlplug.components.critic_stats import explained_variance, masked_whiten

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])


def test_explained_variance_hand_computed():
    returns = torch.tensor([[0.0, 2.0, 4.0, 99.0]], dtype=torch.float64)
    # R - V = [0, 0, 2]: variance 8/9; Var(R) = 8/3; 1 - (8/9)/(8/3) = 2/3.
    values = torch.tensor([[0.0, 2.0, 2.0, -50.0]], dtype=torch.float64)
    assert torch.isclose(explained_variance(values, returns, MASK), torch.tensor(2.0 / 3.0, dtype=torch.float64),
                         rtol=0, atol=1e-15)
    assert explained_variance(returns, returns, MASK).item() == 1.0  # a perfect critic
    assert explained_variance(torch.full_like(returns, 7.0), returns, MASK).item() == 0.0  # a constant one
    # Negative control: ignoring the mask lets the padding in, and the value changes.
    unmasked = explained_variance(values, returns, torch.ones_like(MASK))
    assert not torch.isclose(unmasked, torch.tensor(2.0 / 3.0, dtype=torch.float64))


def test_masked_whiten_hand_computed():
    values = torch.tensor([[1.0, 3.0, 2.0, 100.0]], dtype=torch.float64)
    # mean 2, population variance 2/3 over the masked entries; padding -> 0.
    expected = torch.tensor([[-1.0, 1.0, 0.0, 0.0]], dtype=torch.float64) / (2.0 / 3.0) ** 0.5
    assert torch.allclose(masked_whiten(values, MASK, eps=0.0), expected, rtol=0, atol=1e-15)
    assert not torch.allclose(masked_whiten(values, torch.ones_like(MASK), eps=0.0)[:, :3], expected[:, :3])
