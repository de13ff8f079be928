"""Parity with TRL 1.16's DPOTrainer/KTOTrainer for every TRL ``loss_type`` rlplug maps to a
registered preference loss, weighted combinations (MPO), each f-divergence, WPO weighting and
LD-DPO; KTO's ``apo_zero_unpaired``.

To stay fast, one native DPOTrainer and one rlplug trainer are built (float32, bf16 off), both
perturbed identically once; each case then sets TRL's loss fields on the native trainer (the
attributes its ``__init__`` reads from DPOConfig) and resolves rlplug's loss from a copy of the
config with the same fields, exactly as ``RLPlugDPOTrainer.__init__`` does
(``resolve_trl_preference``), and compares ``compute_loss`` and every gradient on the same
collated batch of 8 pairs. The rlplug trainer itself is built by ``build_trainer("dpo", ...)``
with TRL's MPO fields, so the mapping at construction is exercised for real.

Tolerances: bitwise where rlplug runs the same float32 operations in the same order; 1e-6
where the order differs, with the reason in ``CLOSE_CASES``. Negative controls: for each
case, a plausible mistake (the loss_type ignored, the weights swapped, the f-divergence
ignored, the WPO weights or LD-DPO off, a neighbouring loss) must differ from TRL by far
more than the tolerance.
"""

from __future__ import annotations

import copy

import pytest
import torch
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from rlplug import build_trainer, get_registry
from rlplug.core.preference import preference_loss, unpaired_reward_metrics
from rlplug.core.resolve import BoundComponent, PreferenceComponents
from rlplug.demo.arithmetic_preference import preference_dataset
from rlplug.trl.trl_loss_types import DPO_LOSS_TYPES, KTO_LOSS_TYPES, resolve_trl_preference

ROWS = 8
SEED = 18
WRONG_BY = 1e-4
TOLERANCE = 1e-6
MPO = {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}

# TRL's DPOConfig fields per case.
CASES: dict[str, dict] = {
    "hinge": {"loss_type": ["hinge"]},
    "exo_pair": {"loss_type": ["exo_pair"], "label_smoothing": 1e-3},
    "nca_pair": {"loss_type": ["nca_pair"]},
    "robust": {"loss_type": ["robust"], "label_smoothing": 0.1},
    "bco_pair": {"loss_type": ["bco_pair"]},
    "sppo_hard": {"loss_type": ["sppo_hard"]},
    "aot": {"loss_type": ["aot"]},
    "aot_unpaired": {"loss_type": ["aot_unpaired"], "label_smoothing": 0.1},
    "apo_zero": {"loss_type": ["apo_zero"]},
    "apo_down": {"loss_type": ["apo_down"]},
    "discopop": {"loss_type": ["discopop"], "discopop_tau": 0.05},
    "sft": {"loss_type": ["sft"]},
    "sigmoid_norm": {"loss_type": ["sigmoid_norm"]},
    "mpo": MPO,
    "forward_kl": {"loss_type": ["sigmoid"], "f_divergence_type": "forward_kl"},
    "js_divergence": {"loss_type": ["sigmoid"], "f_divergence_type": "js_divergence"},
    "alpha_divergence": {"loss_type": ["sigmoid"], "f_divergence_type": "alpha_divergence",
                         "f_alpha_divergence_coef": 0.5},
    "ipo_alpha_divergence": {"loss_type": ["ipo"], "f_divergence_type": "alpha_divergence",
                             "f_alpha_divergence_coef": 0.3},
    "hinge_js_divergence": {"loss_type": ["hinge"], "f_divergence_type": "js_divergence"},
    "wpo": {"loss_type": ["sigmoid"], "use_weighting": True},
    "ld_dpo": {"loss_type": ["sigmoid"], "ld_alpha": 0.5},
    # TRL 1.16 cannot weight its sft term (an in-place product on an expanded tensor fails), so
    # the WPO + LD-DPO combination case leaves sft out.
    "combination_wpo_ld": {"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [0.8, 0.2], "use_weighting": True,
                           "ld_alpha": 0.3},
}
# Cases that agree to 1e-6, not bitwise, and why.
CLOSE_CASES = {
    # TRL takes the token mean of the chosen per-token log-probs in one reduction; rlplug sums per
    # sequence, then divides the batch total by the token count: same value, other float32 order.
    "sft": "token mean in another summation order",
    # TRL adds 0.0 + w_k * mean(L_k) per type; rlplug averages sum_k w_k * L_k,i: same value,
    # other order (and the sft term as above).
    "mpo": "weighted sum before the mean",
    "combination_wpo_ld": "weighted sum before the mean",
}
# A plausible mistake per case: the DPOConfig fields rlplug is run with instead.
NEGATIVE = {
    "hinge": {"loss_type": ["sigmoid"]},
    "exo_pair": {"loss_type": ["exo_pair"], "label_smoothing": 1e-2},
    "nca_pair": {"loss_type": ["bco_pair"]},
    "robust": {"loss_type": ["robust"], "label_smoothing": 0.0},
    "bco_pair": {"loss_type": ["nca_pair"]},
    "sppo_hard": {"loss_type": ["ipo"]},
    "aot": {"loss_type": ["aot_unpaired"]},
    "aot_unpaired": {"loss_type": ["aot"], "label_smoothing": 0.1},
    "apo_zero": {"loss_type": ["apo_down"]},
    "apo_down": {"loss_type": ["apo_zero"]},
    "discopop": {"loss_type": ["discopop"], "discopop_tau": 0.5},
    "sft": {"loss_type": ["sigmoid"]},
    "sigmoid_norm": {"loss_type": ["sigmoid"]},
    "mpo": {**MPO, "loss_weights": [0.2, 0.8, 1.0]},
    "forward_kl": {"loss_type": ["sigmoid"]},
    "js_divergence": {"loss_type": ["sigmoid"]},
    "alpha_divergence": {"loss_type": ["sigmoid"], "f_divergence_type": "alpha_divergence",
                         "f_alpha_divergence_coef": 0.9},
    "ipo_alpha_divergence": {"loss_type": ["ipo"]},
    "hinge_js_divergence": {"loss_type": ["hinge"]},
    "wpo": {"loss_type": ["sigmoid"]},
    "ld_dpo": {"loss_type": ["sigmoid"]},
    "combination_wpo_ld": {"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [0.8, 0.2], "use_weighting": True},
}
NATIVE_DEFAULTS = {"loss_type": ["sigmoid"], "loss_weights": None, "label_smoothing": 0.0, "discopop_tau": 0.05,
                   "f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5, "use_weighting": False,
                   "ld_alpha": None}


def trl_args(output_dir, **fields):
    return dict(output_dir=str(output_dir), per_device_train_batch_size=ROWS, bf16=False,
                gradient_checkpointing=False, report_to="none", **fields)


def perturb(model, seed=SEED):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def loss_and_grads(trainer, inputs):
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics


def differences(ours, native):
    assert ours[1].keys() == native[1].keys() and ours[1]
    loss_diff = (ours[0] - native[0]).abs().item()
    grad_diff = max((ours[1][name] - native[1][name]).abs().max().item() for name in ours[1])
    return loss_diff, grad_diff


class Pair:
    """The native DPOTrainer and rlplug's trainer on the same perturbed model and batch."""

    def __init__(self, model_dir, output_dir, rows):
        # use_weighting at construction makes both fused LM heads return log_sum_sq_probs; each
        # case sets use_weighting itself.
        self.native = DPOTrainer(model_dir, args=DPOConfig(**trl_args(output_dir / "native", use_weighting=True)),
                                 train_dataset=rows)
        self.ours = build_trainer("dpo", model=model_dir, train_dataset=rows,
                                  **trl_args(output_dir / "ours", use_weighting=True, **MPO))
        self.algorithm = get_registry().get("algorithms", "dpo")
        perturb(self.native.model)
        perturb(self.ours.model)
        self.inputs = self.native.data_collator([self.native.train_dataset[i] for i in range(ROWS)])
        self.cache = {}

    def run_native(self, case):
        key = ("native", case)
        if key not in self.cache:
            fields = {**NATIVE_DEFAULTS, **CASES[case]}
            trainer = self.native
            trainer.loss_types, trainer.loss_weights = fields["loss_type"], fields["loss_weights"] or [1.0] * len(
                fields["loss_type"])
            for name in ("label_smoothing", "f_divergence_type", "f_alpha_divergence_coef", "use_weighting",
                         "ld_alpha"):
                setattr(trainer, name, fields[name])
            trainer.args.discopop_tau = fields["discopop_tau"]
            self.cache[key] = loss_and_grads(trainer, self.inputs)
        return self.cache[key]

    def run_ours(self, fields):
        key = ("ours", repr(sorted(fields.items())))
        if key not in self.cache:
            config = copy.copy(self.ours.args)
            for name, value in {**NATIVE_DEFAULTS, **fields}.items():
                setattr(config, name, value)
            trainer = self.ours
            trainer.components = resolve_trl_preference(self.algorithm, "paired", config, DPO_LOSS_TYPES, "sigmoid")
            trainer.args.use_weighting, trainer.args.ld_alpha = config.use_weighting, config.ld_alpha
            trainer.ld_alpha = config.ld_alpha  # TRL's reference forward reads it
            self.cache[key] = loss_and_grads(trainer, self.inputs)
        return self.cache[key]


@pytest.fixture(scope="module")
def pair(tiny_model_dir, tmp_path_factory):
    rows = preference_dataset("paired").select(range(2 * ROWS))
    return Pair(tiny_model_dir, tmp_path_factory.mktemp("loss-types"), rows)


def test_build_trainer_maps_trl_mpo_fields_to_the_weighted_rlplug_loss(pair):
    assert pair.ours.components.loss.name == "dpo_sigmoid+bco_pair+dpo_sft"
    assert pair.ours.components.spec.needs_reference
    assert pair.ours.args.loss_type == MPO["loss_type"]  # the user's config is left as given


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradients_match_dpotrainer(pair, case):
    ours, native = pair.run_ours(CASES[case]), pair.run_native(case)
    loss_diff, grad_diff = differences(ours, native)
    if case in CLOSE_CASES:
        assert loss_diff <= TOLERANCE and grad_diff <= TOLERANCE, (CLOSE_CASES[case], loss_diff, grad_diff)
    else:
        assert (loss_diff, grad_diff) == (0.0, 0.0)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        if case != "sft":  # sft alone reads no reference model, so it logs no rewards
            assert ours[2][name] == pytest.approx(native[2][name], rel=1e-6, abs=1e-7), name


@pytest.mark.parametrize("case", list(CASES))
def test_negative_control_differs_from_dpotrainer(pair, case):
    loss_diff, grad_diff = differences(pair.run_ours(NEGATIVE[case]), pair.run_native(case))
    assert max(loss_diff, grad_diff) > WRONG_BY, (loss_diff, grad_diff)


# ---- KTO's apo_zero_unpaired ----------------------------------------------------------------


@preference_loss(data="unpaired", needs_reference=True)
def apo_zero_unpaired_labels_swapped(batch, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """The mistake: desirable completions pushed down, undesirable ones up."""
    rewards = beta * batch.logratios
    losses = torch.where(batch.labels, desirable_weight * torch.sigmoid(rewards), undesirable_weight * (1 - torch.sigmoid(rewards)))
    return losses, unpaired_reward_metrics(rewards, batch.labels)


def test_kto_apo_zero_unpaired_matches_ktotrainer(tiny_model_dir, tmp_path):
    rows = preference_dataset("unpaired").select(range(2 * ROWS))
    fields = trl_args(tmp_path, loss_type="apo_zero_unpaired")
    native = KTOTrainer(tiny_model_dir, args=KTOConfig(**fields), train_dataset=rows)
    ours = build_trainer("kto", model=tiny_model_dir, train_dataset=rows, **fields)
    assert ours.components.loss.name == "apo_zero_unpaired" and not ours.calculate_KL
    perturb(native.model)
    perturb(ours.model)
    inputs = native.data_collator([native.train_dataset[i] for i in range(ROWS)])
    expected, result = loss_and_grads(native, inputs), loss_and_grads(ours, inputs)
    # KTOTrainer averages desirable-then-undesirable, rlplug in row order: the loss agrees to float32
    # rounding; d mean / d L_i = 1/B for every row, so the gradients are bitwise equal.
    assert (result[0] - expected[0]).abs().item() <= TOLERANCE
    assert all(torch.equal(result[1][name], expected[1][name]) for name in expected[1])
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert result[2][name] == pytest.approx(expected[2][name], rel=1e-6, abs=1e-7), name

    wrong = BoundComponent("preference_losses", "wrong", apo_zero_unpaired_labels_swapped, {"beta": 0.1})
    ours.components = PreferenceComponents(ours.components.algorithm, wrong, ours.components.spec)
    loss_diff, grad_diff = differences(loss_and_grads(ours, inputs), expected)
    assert max(loss_diff, grad_diff) > WRONG_BY


# ---- the TRL loss_type table -------------------------------------------------------------------


@pytest.mark.parametrize("table", [DPO_LOSS_TYPES, KTO_LOSS_TYPES])
def test_every_trl_loss_type_names_a_registered_loss_and_its_recipe(table):
    registry = get_registry()
    for trl_name, loss_name in table.items():
        registry.get("preference_losses", loss_name)
        recipe = registry.get("algorithms", {"dpo_sigmoid": "dpo"}.get(loss_name, loss_name))
        assert recipe.preference_loss == loss_name, trl_name


def test_loss_type_conflicting_with_the_recipe_is_refused(tmp_path):
    config = DPOConfig(**trl_args(tmp_path, loss_type="hinge"))
    with pytest.raises(ValueError, match="give the loss once"):
        resolve_trl_preference(get_registry().get("algorithms", "ipo"), "paired", config, DPO_LOSS_TYPES, "sigmoid")
    with pytest.raises(ValueError, match="'nope' has no rlplug preference loss"):
        resolve_trl_preference(get_registry().get("algorithms", "dpo"), "paired",
                               DPOConfig(**trl_args(tmp_path, loss_type="nope")), DPO_LOSS_TYPES, "sigmoid")
