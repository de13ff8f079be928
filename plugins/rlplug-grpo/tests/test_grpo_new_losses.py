"""SAPO, VESPO, GMPO, sequence-level ratios (ppo_clip, CISPO) and the LUSPO aggregation: hand values and properties.

Parity of sapo/luspo/vespo/sequence-level cispo with TRL's trainer is in
tests/test_parity_grpo_objectives.py; here each formula is checked on numbers worked out
by hand, with a negative control per loss.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlplug.components.aggregation import sequence_sum_mean
from rlplug.core.aggregation import AggregationContext
from rlplug_grpo.losses import cispo, gmpo, gspo_clip, importance_ratio, ppo_clip, sapo, vespo, vespo_gamma_weights


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_sapo_hand_values():
    # rho = 1.5 with A = 2 (tau_pos = 1); rho = 0.5 with A = -1 (tau_neg = 1.05)
    logps = torch.tensor([[math.log(1.5)], [math.log(0.5)]], dtype=torch.float64)
    old = torch.zeros_like(logps)
    advantages = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    loss, _ = sapo(logps, old, advantages, torch.ones_like(logps))
    tau_neg = torch.tensor(1.05).item()  # torch.where on Python scalars makes float32 temperatures, as in TRL
    expected = [-(4 / 1.0) * sigmoid(1.0 * 0.5) * 2.0, -(4 / tau_neg) * sigmoid(tau_neg * -0.5) * -1.0]
    assert loss.squeeze(1).tolist() == pytest.approx(expected, abs=1e-12)
    assert loss[0, 0].item() == pytest.approx(-4.979674649, abs=1e-8)


def test_sapo_is_the_policy_gradient_on_policy_and_fades_off_policy():
    """At rho = 1 the gate's gradient is exactly -A per token (like PPO); far from 1 it vanishes."""
    advantages = torch.tensor([[1.5], [-0.7]])
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    loss, _ = sapo(logps, logps.detach(), advantages, torch.ones(2, 2))
    (grad,) = torch.autograd.grad(loss.sum(), logps)
    assert torch.allclose(grad, -advantages.expand(2, 2), atol=1e-6)
    far = torch.tensor([[5.0]], requires_grad=True)
    far_loss, _ = sapo(far, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    (far_grad,) = torch.autograd.grad(far_loss.sum(), far)
    assert abs(far_grad.item()) < 1e-3 * abs(grad[0, 0].item())
    # Negative control: a gate without the 4/tau normalization is not the policy gradient at rho = 1.
    ratio = torch.exp(logps - logps.detach())
    wrong = -(torch.sigmoid(ratio - 1) * advantages).sum()
    (wrong_grad,) = torch.autograd.grad(wrong, logps)
    assert not torch.allclose(wrong_grad, -advantages.expand(2, 2), atol=1e-3)


def test_vespo_gamma_weight_hand_values():
    # sequence log ratio 0.5 (two tokens 0.2 + 0.3; a masked third token 9.0 is ignored)
    log_ratio = torch.tensor([[0.2, 0.3, 9.0], [0.2, 0.3, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    advantages = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    phi = vespo_gamma_weights(log_ratio, advantages, mask, 2.0, 3.0, 3.0, 2.0)
    w = math.exp(0.5)
    expected = [math.exp(3.0 + 2.0 * 0.5 - 3.0 * w), math.exp(2.0 + 3.0 * 0.5 - 2.0 * w)]
    assert phi.squeeze(1).tolist() == pytest.approx(expected, rel=1e-12)
    # phi(1) = 1, and phi peaks at w = k / lambda
    ones = vespo_gamma_weights(torch.zeros(2, 3), advantages.float(), mask.float(), 2.0, 3.0, 3.0, 2.0)
    assert torch.equal(ones, torch.ones(2, 1))
    grid = torch.linspace(-2.0, 1.0, 3001).unsqueeze(1)
    values = vespo_gamma_weights(grid, torch.ones(3001, 1), torch.ones(3001, 1), 2.0, 3.0, 3.0, 2.0)
    assert math.exp(grid[values.argmax()].item()) == pytest.approx(2.0 / 3.0, abs=2e-3)


def test_vespo_weight_is_detached():
    """The gradient is -phi * A per token: phi scales, it is not differentiated (negative control: it is not zero)."""
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.1]])
    advantages = torch.tensor([[2.0]])
    loss, metrics = vespo(logps, old, advantages, torch.ones(1, 2))
    (grad,) = torch.autograd.grad(loss.sum(), logps)
    phi = metrics["vespo/phi_seq_mean"]
    assert torch.allclose(grad, (-phi * advantages).expand(1, 2))
    assert phi.item() != pytest.approx(1.0, abs=1e-3)


def test_gmpo_hand_values_and_sign_aware_log_clip():
    # token log-ratios 0.1 and 0.6 (a third, masked, -5.0); epsilon 0.4 in log space
    logps = torch.tensor([[0.1, 0.6, -5.0], [0.1, 0.6, -5.0]], dtype=torch.float64)
    old = torch.zeros_like(logps)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    advantages = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    loss, metrics = gmpo(logps, old, advantages, mask)
    # A > 0: min(lr, clip(lr)) -> 0.1, 0.4 ; A < 0: max(lr, clip(lr)) -> 0.1, 0.6
    expected = [-math.exp((0.1 + 0.4) / 2) * 2.0, -math.exp((0.1 + 0.6) / 2) * -1.0]
    assert loss.shape == (2, 1)
    assert loss.squeeze(1).tolist() == pytest.approx(expected, rel=1e-12)
    assert metrics["clip_ratio/high_mean"][0].tolist() == [0.0, 1.0, 0.0]
    # Negative control: the arithmetic mean of clipped ratios (GRPO-like) gives a different value.
    arithmetic = -((math.exp(0.1) + math.exp(0.4)) / 2) * 2.0
    assert loss[0, 0].item() != pytest.approx(arithmetic, rel=1e-6)


def test_sequence_level_ratio_is_gspos_and_cispo_caps_it():
    generator = torch.Generator().manual_seed(0)
    logps = torch.randn(4, 5, generator=generator, dtype=torch.float64) - 2
    old = logps + 0.3 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float64)
    advantages = torch.randn(4, 1, generator=generator, dtype=torch.float64)
    ratio = importance_ratio(logps, old, mask, "sequence")
    by_hand = torch.stack([((logps[i] - old[i]) * mask[i]).sum() / mask[i].sum() for i in range(4)]).exp()
    assert torch.allclose(ratio.squeeze(1), by_hand, rtol=1e-12)
    seq_ppo, _ = ppo_clip(logps, old, advantages, mask, epsilon=3e-4, epsilon_high=4e-4, importance_sampling_level="sequence")
    gspo, _ = gspo_clip(logps, old, advantages, mask)
    assert torch.equal(seq_ppo, gspo)
    loss, metrics = cispo(logps, old, advantages, mask, epsilon_high=1.05, importance_sampling_level="sequence")
    assert torch.allclose(loss, -torch.clamp(by_hand, max=1.05).unsqueeze(1) * advantages * logps, rtol=1e-12)
    assert metrics["cispo_clip_ratio"].shape == (4, 1)
    token_loss, _ = cispo(logps, old, advantages, mask, epsilon_high=1.05)
    assert not torch.allclose(token_loss, loss)  # negative control: token level is another loss
    with pytest.raises(ValueError, match="importance_sampling_level"):
        importance_ratio(logps, old, mask, "sentence")


def test_sequence_sum_mean_hand_value():
    per_token_loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss = sequence_sum_mean(per_token_loss, mask, AggregationContext(gradient_accumulation_steps=2))
    assert loss.item() == pytest.approx(((1 + 2) + 4) / 2 / 2)
    # a (B, 1) sequence loss is weighted by length: (2 * 1.0 + 1 * 4.0) / 2
    sequence = sequence_sum_mean(torch.tensor([[1.0], [4.0]]), mask, AggregationContext())
    assert sequence.item() == pytest.approx(3.0)
    assert sequence.item() != pytest.approx((1.0 + 4.0) / 2)  # negative control: not GSPO's plain mean
