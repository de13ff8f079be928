"""Entropy regularization components (rlplug.components.entropy): hand values, TRL's filter on tensors, controller.

Whole-trainer parity for the filter and the bonus (static and adaptive) is in
tests/test_parity_grpo_objectives.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rlplug.components.entropy import AdaptiveEntropyController, entropy_bonus_term, high_entropy_mask

ENTROPIES = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.7, 5.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the 5.0 is padding


def test_high_entropy_mask_hand_value():
    # valid entropies sorted 0.1 0.3 0.5 0.7 0.9; the 0.6 quantile (top 40%) is 0.5 + 0.4 * 0.2 = 0.58
    kept = high_entropy_mask(ENTROPIES, MASK, ENTROPIES[MASK.bool()], 0.4)
    assert kept.tolist() == [[False, False, True], [False, True, False]]
    everything = high_entropy_mask(ENTROPIES, MASK, ENTROPIES[MASK.bool()], 1.0)
    assert torch.equal(everything, MASK.bool())  # rho = 1 keeps every real token, never padding
    nothing_valid = high_entropy_mask(ENTROPIES, torch.zeros_like(MASK), torch.empty(0), 0.4)
    assert not nothing_valid.any()


def test_high_entropy_mask_equals_trls():
    """TRL's GRPOTrainer.get_high_entropy_mask on one process, against ours; negative control: another quantile."""
    from accelerate import Accelerator
    from trl import GRPOTrainer

    generator = torch.Generator().manual_seed(3)
    entropies = torch.rand(6, 7, generator=generator) * 3
    mask = (torch.rand(6, 7, generator=generator) > 0.3).float()
    fake = SimpleNamespace(accelerator=Accelerator(cpu=True))
    for rho in (0.2, 0.5, 0.9):
        trl_mask = GRPOTrainer.get_high_entropy_mask(fake, entropies, mask, 1 - rho)
        ours = high_entropy_mask(entropies, mask, entropies[mask.bool()], rho)
        assert torch.equal(ours, trl_mask), rho
    wrong = high_entropy_mask(entropies, mask, entropies[mask.bool()], 0.5)
    assert not torch.equal(wrong, GRPOTrainer.get_high_entropy_mask(fake, entropies, mask, 1 - 0.2))


def test_entropy_bonus_hand_value_and_gradient():
    entropies = ENTROPIES.clone().requires_grad_()
    term = entropy_bonus_term(entropies, MASK, 0.1, 2)
    assert term.item() == pytest.approx(-0.1 * (0.1 + 0.5 + 0.9 + 0.3 + 0.7) / 5 / 2)
    (grad,) = torch.autograd.grad(term, entropies)
    assert torch.allclose(grad, -0.1 / 5 / 2 * MASK)  # raises every kept token's entropy equally, padding untouched
    assert entropy_bonus_term(ENTROPIES, MASK, 0.0, 1).item() == 0.0


def test_adaptive_controller_steps_and_gates():
    controller = AdaptiveEntropyController(coef=0.01, target=0.5, delta=0.005, coef_min=0.0, coef_max=0.02)
    assert controller.applied_coef() == 0.0  # no entropy measured yet (inf > target)
    controller.update(0.4)
    assert controller.coef == pytest.approx(0.015) and controller.applied_coef() == pytest.approx(0.015)
    controller.update(0.3)
    controller.update(0.2)
    assert controller.coef == 0.02  # capped at coef_max
    controller.update(0.9)
    assert controller.coef == pytest.approx(0.015) and controller.applied_coef() == 0.0  # above target: off
    for _ in range(5):
        controller.update(0.9)
    assert controller.coef == 0.0  # floored at coef_min
    assert controller.last_entropy == 0.9
    # Negative control: the sign of the rule matters; a controller fed low entropy never decreases.
    rising = AdaptiveEntropyController(coef=0.01, target=0.5, delta=0.005, coef_min=0.0, coef_max=1.0)
    for _ in range(3):
        rising.update(0.1)
    assert rising.coef == pytest.approx(0.025) and not math.isinf(rising.last_entropy)


def test_filter_quantile_out_of_range_is_one_line_error():
    from trl import GRPOConfig

    from rlplug.trl.entropy import EntropyRegularization

    args = GRPOConfig(output_dir="unused", top_entropy_quantile=1.5, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="top_entropy_quantile must be in"):
        EntropyRegularization(args)
