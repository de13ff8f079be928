"""Exact values for the preference losses, on small float64 batches computed by hand.

The inputs are chosen so that every sigmoid argument is 0, ln 3 or a small integer, so the
expected values have closed forms (sigma(0) = 1/2, sigma(ln 3) = 3/4). float64 keeps the
comparison at 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlplug import get_registry
from rlplug.core.preference import (
    PreferenceBatch,
    PreferenceDataError,
    PreferenceLossSpec,
    check_preference_columns,
    preference_loss,
    preference_loss_spec,
    token_mean_nll,
)

LN3 = math.log(3.0)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def loss_fn(name):
    return get_registry().get("preference_losses", name)


def paired(
    chosen, rejected, ref_chosen=None, ref_rejected=None, chosen_lengths=(1.0, 1.0), rejected_lengths=(1.0, 1.0)
):
    chosen, chosen_lengths = t(*chosen), t(*chosen_lengths)
    return PreferenceBatch(
        chosen_logps=chosen,
        rejected_logps=t(*rejected),
        chosen_lengths=chosen_lengths,
        rejected_lengths=t(*rejected_lengths),
        ref_chosen_logps=None if ref_chosen is None else t(*ref_chosen),
        ref_rejected_logps=None if ref_rejected is None else t(*ref_rejected),
        chosen_nll=token_mean_nll(chosen, chosen_lengths),
    )


def close(actual, expected):
    assert actual.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


# ---- DPO ---------------------------------------------------------------------------------


def test_dpo_sigmoid_exact_values_and_metrics():
    # beta 0.5. Row 0: log-ratios 0.5 and 0.5, gap 0 -> ln 2. Row 1: log-ratios 2 ln 3 and 0,
    # beta * gap = ln 3 -> -ln(3/4).
    batch = paired(
        chosen=(-1.0, -1.0 + 2 * LN3), rejected=(-2.0, -3.0), ref_chosen=(-1.5, -1.0), ref_rejected=(-2.5, -3.0)
    )
    losses, metrics = loss_fn("dpo_sigmoid")(batch, beta=0.5)
    close(losses, [math.log(2.0), -math.log(0.75)])
    close(metrics["rewards/chosen"], [0.25, LN3])
    close(metrics["rewards/rejected"], [0.25, 0.0])
    close(metrics["rewards/margins"], [0.0, LN3])
    assert metrics["rewards/accuracies"].tolist() == [0.0, 1.0]


def test_dpo_refuses_a_batch_without_reference():
    with pytest.raises(ValueError, match="ref_chosen_logps is None"):
        loss_fn("dpo_sigmoid")(paired(chosen=(-1.0, -1.0), rejected=(-2.0, -2.0)))


# ---- IPO: TRL's length-normalized form and the seeds' unnormalized form ------------------

IPO_BATCH = dict(
    # chosen log-ratios 0.5 and 0; rejected log-ratios -1 and 0.5
    chosen=(-1.0, -2.0), ref_chosen=(-1.5, -2.0), rejected=(-3.0, -1.0), ref_rejected=(-2.0, -1.5),
    chosen_lengths=(2.0, 3.0), rejected_lengths=(2.0, 1.0),
)


def test_ipo_unnormalized_seed_form_exact():
    # beta (tau) 0.25: target 1 / (2 tau) = 2. h = 0.5 - (-1) = 1.5 and 0 - 0.5 = -0.5.
    losses, _ = loss_fn("ipo")(paired(**IPO_BATCH), beta=0.25, normalize_length=False)
    close(losses, [(1.5 - 2.0) ** 2, (-0.5 - 2.0) ** 2])  # 0.25, 6.25


def test_ipo_length_normalized_trl_form_exact():
    # Row 0: 0.5/2 - (-1)/2 = 0.75; row 1: 0/3 - 0.5/1 = -0.5.
    losses, metrics = loss_fn("ipo")(paired(**IPO_BATCH), beta=0.25)
    close(losses, [(0.75 - 2.0) ** 2, (-0.5 - 2.0) ** 2])  # 1.5625, 6.25
    close(metrics["rewards/chosen"], [0.125, 0.0])  # beta * summed log-ratio, as TRL logs


def test_ipo_forms_differ_negative_control():
    normalized, _ = loss_fn("ipo")(paired(**IPO_BATCH), beta=0.25, normalize_length=True)
    unnormalized, _ = loss_fn("ipo")(paired(**IPO_BATCH), beta=0.25, normalize_length=False)
    assert normalized[0].item() != pytest.approx(unnormalized[0].item())


def test_ipo_is_zero_at_its_target_and_grows_either_side():
    # tau = 0.5: target 1. Gaps 1 (on target), 0 and 2 (one unit either side).
    batch = paired(chosen=(1.0, 0.0, 2.0), rejected=(0.0,) * 3, ref_chosen=(0.0,) * 3, ref_rejected=(0.0,) * 3,
                   chosen_lengths=(1.0,) * 3, rejected_lengths=(1.0,) * 3)
    losses, _ = loss_fn("ipo")(batch, beta=0.5, normalize_length=False)
    close(losses, [0.0, 1.0, 1.0])


# ---- KTO: z_ref as the seeds define it (E[beta * KL], unclamped) and TRL's clamp ------------


def kto_batch():
    return PreferenceBatch(
        logps=t(-1.0, -1.0 - 2 * LN3, 3.0),
        lengths=t(2.0, 2.0, 1.0),
        ref_logps=t(0.0, 0.0, 0.0),
        labels=torch.tensor([True, False, True]),
        kl_reference=torch.tensor(-1.0, dtype=torch.float64),  # a negative estimate
    )


def test_kto_seed_reference_point_exact():
    # beta 0.5, z_ref = beta * KL = -0.5, lambda_D 2, lambda_U 1; r = beta * log-ratio.
    # Row 0 desirable, r = -0.5:            2 * (1 - sigma(r - z_ref)) = 2 * (1 - sigma(0)) = 1
    # Row 1 undesirable, r = -0.5 - ln 3:   1 * (1 - sigma(z_ref - r)) = 1 - sigma(ln 3) = 1/4
    # Row 2 desirable, r = 1.5:             2 * (1 - sigma(2)) = 2 / (1 + e^2)
    losses, metrics = loss_fn("kto")(kto_batch(), beta=0.5, desirable_weight=2.0, undesirable_weight=1.0,
                                     clamp_kl=False)
    close(losses, [1.0, 0.25, 2.0 / (1.0 + math.exp(2.0))])
    assert metrics["kl"].item() == -1.0
    close(metrics["rewards/chosen"][[0, 2]], [-0.5, 1.5])
    assert math.isnan(metrics["rewards/chosen"][1].item()) and math.isnan(metrics["rewards/rejected"][0].item())


def test_kto_trl_clamps_the_reference_point_negative_control():
    # TRL clamps KL at 0, so z_ref = 0: row 0: 2 * (1 - sigma(-0.5)) = 2 / (1 + e^-0.5);
    # row 1: 1 - sigma(0.5 + ln 3) = 1 / (1 + 3 e^0.5); row 2: 2 * (1 - sigma(1.5)) = 2 / (1 + e^1.5).
    losses, metrics = loss_fn("kto")(kto_batch(), beta=0.5, desirable_weight=2.0, undesirable_weight=1.0)
    close(losses, [2.0 / (1.0 + math.exp(-0.5)), 1.0 / (1.0 + 3.0 * math.exp(0.5)), 2.0 / (1.0 + math.exp(1.5))])
    assert metrics["kl"].item() == 0.0
    seed_form, _ = loss_fn("kto")(kto_batch(), beta=0.5, desirable_weight=2.0, clamp_kl=False)
    assert losses[0].item() != pytest.approx(seed_form[0].item())


def test_kto_without_kl_reference_is_a_clear_error():
    batch = PreferenceBatch(logps=t(-1.0), lengths=t(1.0), ref_logps=t(-1.0), labels=torch.tensor([True]))
    with pytest.raises(ValueError, match="kl_reference"):
        loss_fn("kto")(batch)


# ---- CPO and SimPO: no reference read ------------------------------------------------------


def test_cpo_exact_with_token_mean_nll():
    # beta 1. Row 0: gap 0 -> ln 2; row 1: gap ln 3 -> ln(4/3).
    # NLL = -(-1 - 2) / (1 + 4) tokens = 0.6 (a per-sequence mean would give (1 + 0.5) / 2 = 0.75).
    batch = paired(chosen=(-1.0, -2.0), rejected=(-1.0, -2.0 - LN3), chosen_lengths=(1.0, 4.0))
    losses, metrics = loss_fn("cpo")(batch, beta=1.0, cpo_alpha=1.0)
    close(losses, [math.log(2.0) + 0.6, math.log(4.0 / 3.0) + 0.6])
    assert metrics["nll_loss"].item() == pytest.approx(0.6, rel=1e-12)
    close(metrics["rewards/chosen"], [-1.0, -2.0])
    losses_without_nll, _ = loss_fn("cpo")(batch, beta=1.0, cpo_alpha=0.0)
    close(losses_without_nll, [math.log(2.0), math.log(4.0 / 3.0)])


def test_simpo_exact_and_the_seed_form_at_beta_one():
    # beta 2, gamma 1: -log sigmoid(beta * (avg_w - avg_l) - gamma).
    # Row 0: avg -1 vs -2 -> 2 * 1 - 1 = 1. Row 1: avg -1 vs -1.5 -> 2 * 0.5 - 1 = 0 -> ln 2.
    batch = paired(chosen=(-2.0, -3.0), rejected=(-4.0, -3.0), chosen_lengths=(2.0, 3.0), rejected_lengths=(2.0, 2.0))
    losses, metrics = loss_fn("simpo")(batch, beta=2.0, simpo_gamma=1.0)
    close(losses, [math.log(1.0 + math.exp(-1.0)), math.log(2.0)])
    close(metrics["rewards/chosen"], [-2.0, -2.0])  # beta * average log-prob
    # The seeds' formula has no beta: -log sigmoid(avg_w - avg_l - gamma); gamma 0.5 gives args 0.5 and 0.
    seed_form, _ = loss_fn("simpo")(batch, beta=1.0, simpo_gamma=0.5)
    close(seed_form, [math.log(1.0 + math.exp(-0.5)), math.log(2.0)])


def test_reference_free_losses_declare_it_and_reference_losses_do_too():
    registry = get_registry()
    specs = {name: preference_loss_spec(registry.get("preference_losses", name))
             for name in registry.names("preference_losses")}
    assert {name: (s.data, s.needs_reference, s.needs_kl_reference) for name, s in specs.items()} == {
        "2d_dpo": ("paired", True, False),
        "dpo_sigmoid": ("paired", True, False),
        "ipo": ("paired", True, False),
        "kto": ("unpaired", True, True),
        "cpo": ("paired", False, False),
        "simpo": ("paired", False, False),
        **{name: ("paired", True, False) for name in (
            "dpo_hinge", "exo_pair", "nca_pair", "dpo_robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
            "apo_zero", "apo_down", "discopop", "dpo_sigmoid_norm", "mpo")},
        "dpo_sft": ("paired", False, False),
        "apo_zero_unpaired": ("unpaired", True, False),
    }
    assert {name for name, s in specs.items() if s.needs_segments} == {"2d_dpo"}


# ---- the batch contract --------------------------------------------------------------------


def test_undecorated_loss_gets_the_safe_default_spec():
    assert preference_loss_spec(lambda batch: None) == PreferenceLossSpec("paired", True, False)

    @preference_loss(data="unpaired", needs_reference=True, needs_kl_reference=True)
    def custom(batch):
        return batch

    assert preference_loss_spec(custom) == PreferenceLossSpec("unpaired", True, True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data": "triples"}, "paired' or 'unpaired"),
        ({"needs_kl_reference": True}, "unpaired losses only"),
        ({"data": "unpaired", "needs_reference": False, "needs_kl_reference": True}, "needs_reference=True"),
    ],
)
def test_invalid_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        preference_loss(**kwargs)


def test_batch_shapes_and_modes_are_checked():
    with pytest.raises(ValueError, match="either chosen_logps"):
        PreferenceBatch()
    with pytest.raises(ValueError, match=r"rejected_logps must have shape \(2,\)"):
        PreferenceBatch(chosen_logps=t(1.0, 2.0), rejected_logps=t(1.0), chosen_lengths=t(1.0, 1.0),
                        rejected_lengths=t(1.0, 1.0))
    with pytest.raises(ValueError, match="both ref_chosen_logps and ref_rejected_logps"):
        PreferenceBatch(chosen_logps=t(1.0), rejected_logps=t(1.0), chosen_lengths=t(1.0), rejected_lengths=t(1.0),
                        ref_chosen_logps=t(0.0))
    with pytest.raises(ValueError, match="labels must be bool"):
        PreferenceBatch(logps=t(1.0), lengths=t(1.0), labels=t(1.0))


def test_token_mean_nll_counts_tokens_not_sequences():
    assert token_mean_nll(t(-1.0, -2.0), t(1.0, 4.0)).item() == pytest.approx(0.6, rel=1e-12)


@pytest.mark.parametrize(
    "columns, data, missing",
    [
        (["prompt", "chosen"], "paired", "rejected"),
        (["prompt"], "paired", "chosen, rejected"),
        (["prompt", "completion"], "unpaired", "label"),
        (["prompt", "chosen"], "unpaired", "completion, label"),
    ],
)
def test_missing_columns_name_themselves_and_the_algorithm(columns, data, missing):
    with pytest.raises(PreferenceDataError) as error:
        check_preference_columns(columns, data, "myalgo")
    message = str(error.value)
    assert f"lacks column(s) {missing};" in message and "'myalgo'" in message and "\n" not in message


def test_complete_columns_pass():
    check_preference_columns(["prompt", "chosen", "rejected"], "paired", "dpo")
    check_preference_columns(["prompt", "completion", "label"], "unpaired", "kto")
    check_preference_columns(["prompt", "chosen", "rejected"], "unpaired", "kto")  # TRL unpairs these


# ---- the testing kit's contract check ---------------------------------------------------------


@pytest.mark.parametrize("name", ["dpo_sigmoid", "ipo", "kto", "cpo", "simpo"])
def test_every_preference_loss_passes_the_kit_contract_check(name):
    from rlplug.testing import check_preference_loss

    check_preference_loss(loss_fn(name))


def test_the_contract_check_catches_a_loss_of_the_wrong_shape():
    from rlplug.testing import check_preference_loss

    @preference_loss(data="paired", needs_reference=False)
    def per_pair_column(batch):
        return (batch.chosen_logps - batch.rejected_logps).unsqueeze(1), {}

    with pytest.raises(AssertionError, match=r"losses of shape \(3,\)"):
        check_preference_loss(per_pair_column)
