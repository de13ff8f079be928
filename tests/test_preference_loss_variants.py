"""Hand-computed values for the pieces behind TRL's DPO loss variants: f-divergence scores,
weighted combinations, LD-DPO sequence log-probs and WPO pair weights. No model here."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from rlplug import PreferenceBatch, f_divergence_scores, get_registry, preference_loss, weighted_preference_loss
from rlplug.components.sequence_logps import ld_sequence_logps, wpo_pair_weights
from rlplug.core.preference import preference_loss_spec

LOG2 = torch.tensor([math.log(2.0)])


@pytest.mark.parametrize(
    "kind, alpha, expected",
    [
        ("reverse_kl", 0.5, math.log(2.0)),
        ("forward_kl", 0.5, 0.5),  # 1 - 1/t at t = 2
        ("js_divergence", 0.5, math.log(4.0 / 3.0)),  # log(2t / (t + 1)) at t = 2
        ("alpha_divergence", 0.5, 2 * (1 - 2 ** -0.5)),  # (t^(a-1) - 1) / (a - 1) at t = 2, a = 1/2
        ("alpha_divergence", 1.0, math.log(2.0)),  # the limit a -> 1 is the reverse KL
    ],
)
def test_f_divergence_score_at_ratio_two(kind, alpha, expected):
    chosen, rejected = f_divergence_scores(LOG2, -LOG2, kind, alpha)
    assert chosen.item() == pytest.approx(expected, rel=1e-6)
    # The negative control: each score differs from the reverse KL score log 2 except the reverse KL itself.
    assert (chosen.item() == pytest.approx(math.log(2.0), rel=1e-6)) == (kind == "reverse_kl" or alpha == 1.0)


def test_unknown_f_divergence_is_refused_by_name():
    with pytest.raises(ValueError, match="f_divergence_type must be one of .*; got 'kl'"):
        f_divergence_scores(LOG2, LOG2, "kl", 0.5)


def paired_batch(**changes):
    fields = dict(
        chosen_logps=torch.tensor([-1.0, -2.0]), rejected_logps=torch.tensor([-3.0, -1.5]),
        chosen_lengths=torch.tensor([2.0, 4.0]), rejected_lengths=torch.tensor([3.0, 1.0]),
        ref_chosen_logps=torch.tensor([-1.5, -2.0]), ref_rejected_logps=torch.tensor([-2.0, -2.0]),
        chosen_nll=torch.tensor(0.5),
    )
    return PreferenceBatch(**{**fields, **changes})


def test_registered_variants_by_hand():
    registry = get_registry()
    batch = paired_batch()  # u_w = (0.5, 0), u_l = (-1, 0.5), delta = (1.5, -0.5)
    beta = 1.0
    sig = torch.sigmoid
    expected = {
        "dpo_hinge": [max(0.0, 1 - 1.5), max(0.0, 1 + 0.5)],
        "apo_zero": [1 - sig(torch.tensor(0.5)).item() + sig(torch.tensor(-1.0)).item(),
                     1 - 0.5 + sig(torch.tensor(0.5)).item()],
        "sppo_hard": [(0.5 - 0.5) ** 2 + (-1 + 0.5) ** 2, (0 - 0.5) ** 2 + (0.5 + 0.5) ** 2],
        "bco_pair": [-math.log(sig(torch.tensor(0.5)).item()) - math.log(sig(torch.tensor(1.0)).item()),
                     -math.log(0.5) - math.log(sig(torch.tensor(-0.5)).item())],
        "dpo_sft": [0.5, 0.5],
    }
    for name, values in expected.items():
        fn = registry.get("preference_losses", name)
        params = {"beta": beta} if "beta" in inspect.signature(fn).parameters else {}
        result, _ = fn(batch, **params)
        assert result.tolist() == pytest.approx(values, rel=1e-6), name


@preference_loss(data="paired", needs_reference=False)
def first(batch, beta=0.1):
    return beta * batch.chosen_logps, {"a": batch.chosen_logps}


@preference_loss(data="paired", needs_reference=True)
def second(batch, beta=0.1, gamma=2.0):
    return gamma * batch.chosen_logratios, {"a": batch.rejected_logps, "b": batch.rejected_logps}


def test_weighted_combination_sums_the_parts_and_reads_what_any_part_reads():
    combined = weighted_preference_loss([(first, 0.25), (second, 2.0)], name="both")
    assert list(inspect.signature(combined).parameters) == ["batch", "beta", "gamma"]
    assert preference_loss_spec(combined).needs_reference
    batch = paired_batch()
    losses, metrics = combined(batch, beta=0.5, gamma=3.0)
    # 0.25 * 0.5 * (-1, -2) + 2 * 3 * (0.5, 0)
    assert losses.tolist() == pytest.approx([-0.125 + 3.0, -0.25])
    assert torch.equal(metrics["a"], batch.chosen_logps)  # the first part's metric wins
    assert torch.equal(metrics["b"], batch.rejected_logps)
    # Negative control: the weights swapped give another loss.
    swapped, _ = weighted_preference_loss([(first, 2.0), (second, 0.25)])(batch, beta=0.5, gamma=3.0)
    assert not torch.allclose(swapped, losses)


def test_weighted_combination_refuses_mixed_data():
    unpaired = preference_loss(data="unpaired", needs_reference=True)(lambda batch: (batch.logps, {}))
    with pytest.raises(ValueError, match="cannot mix paired and unpaired"):
        weighted_preference_loss([(first, 1.0), (unpaired, 1.0)])


def test_ld_dpo_weights_the_tokens_past_the_shared_length():
    # Two pairs as [chosen; rejected]: completion lengths (chosen 3, rejected 1) and (2, 2).
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0]])
    token_logps = torch.tensor([[0.0, -1.0, -2.0, -4.0], [0.0, -1.0, -1.0, 0.0],
                                [0.0, -3.0, 0.0, 0.0], [0.0, -2.0, -2.0, 0.0]]) * mask
    assert ld_sequence_logps(token_logps, mask, 0.5).tolist() == [-1.0 + 0.5 * -6.0, -2.0, -3.0, -4.0]
    assert torch.equal(ld_sequence_logps(token_logps, mask, 1.0), token_logps.sum(dim=1))
    assert torch.equal(ld_sequence_logps(token_logps, mask, None), token_logps.sum(dim=1))
    # Negative control: ld_alpha = 0 drops the tail, so the long chosen completion changes.
    assert ld_sequence_logps(token_logps, mask, 0.0)[0].item() == -1.0


def test_wpo_weights_are_the_product_of_mean_aligned_probabilities():
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    token_logps = torch.tensor([[0.0, -1.0, -3.0], [0.0, -2.0, 0.0]], requires_grad=True)
    log_sum_sq = torch.tensor([[0.0, -0.5, -0.5], [0.0, -1.0, 0.0]])
    weights = wpo_pair_weights(token_logps, log_sum_sq, mask)
    # chosen: exp(((-1 + 0.5) + (-3 + 0.5)) / 2) = exp(-1.5); rejected: exp(-2 + 1) = exp(-1)
    assert weights.tolist() == pytest.approx([math.exp(-2.5)], rel=1e-6)
    assert not weights.requires_grad  # the weights are constants of the loss, as in TRL


def test_discopop_stays_finite_at_a_very_negative_margin():
    """At beta * delta = -200 the mixing weight is 0, so the loss is -log sigma(-200) = 200; TRL's
    arithmetic (negative control) evaluates exp(200) * 0 = inf * 0 = NaN there."""
    discopop = get_registry().get("preference_losses", "discopop")
    batch = paired_batch(chosen_logps=torch.tensor([-2000.0, -1.0]), rejected_logps=torch.tensor([0.0, -1.0]),
                         ref_chosen_logps=torch.tensor([0.0, 0.0]), ref_rejected_logps=torch.tensor([0.0, 0.0]))
    losses, _ = discopop(batch, beta=0.1)
    assert losses.tolist() == [200.0, pytest.approx(math.log(2) * 0.5 + 0.5)]  # z = 0: m = 1/2
    z = torch.tensor([-200.0])
    modulation = torch.sigmoid(z / 0.05)
    trl_form = -torch.nn.functional.logsigmoid(z) * (1 - modulation) + torch.exp(-z) * modulation
    assert torch.isnan(trl_form).all()
