"""Parity with TRL's native preference trainers: the same batch, the same loss and gradients.

Every case builds TRL's trainer and rlplug's adapter on the same tiny model (float32, bf16
off), perturbs the trained weights identically (so the policy differs from the reference),
collates the same 8 rows with the trainer's own collator, and compares ``compute_loss`` and
the gradients of every parameter. Each case has a negative control: a deliberately wrong
variant of the loss, run the same way, must differ from TRL by far more than the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from trl.experimental.cpo import CPOConfig, CPOTrainer

from rlplug import build_trainer, hookimpl
from rlplug.core import plugins
from rlplug.core.preference import paired_reward_metrics, preference_loss, unpaired_reward_metrics
from rlplug.demo.arithmetic_preference import preference_dataset

ROWS = 8
# Perturbation seed chosen so that, with the full-fine-tuning KTO case, the KL estimate from the
# mismatched pairs is positive (TRL's clamp at 0 is inactive and z_ref really enters the loss);
# seed 1 gives a negative estimate, so the clamp is exercised too.
PERTURB_SEED_KL_POSITIVE = 18
PERTURB_SEED_KL_NEGATIVE = 1
# For the DPOTrainer-based cases rlplug runs TRL's own forward passes and the same tensor ops in
# the same order, so parity is bitwise. CPOTrainer computes log-probs from the full logits with
# selective_log_softmax, while DPOTrainer's fused LM head computes them in tiles: the same math in
# a different float32 operation order, so those cases agree to 1e-6, not bitwise.
CPO_TOLERANCE = 1e-6
# KTOTrainer averages the per-example losses after concatenating desirable then undesirable rows;
# rlplug averages them in row order. Same values, different summation order: the loss agrees to
# float32 rounding (1e-6); the gradients, d mean / d loss_i = 1/B for every row, are bitwise equal.
KTO_LOSS_TOLERANCE = 1e-6
WRONG_BY = 1e-4


@pytest.fixture(scope="module")
def paired_rows():
    return preference_dataset("paired").select(range(2 * ROWS))


@pytest.fixture(scope="module")
def unpaired_rows():
    return preference_dataset("unpaired").select(range(2 * ROWS))


def trl_args(tmp_path, **fields):
    return dict(
        output_dir=str(tmp_path), per_device_train_batch_size=ROWS, bf16=False, gradient_checkpointing=False,
        report_to="none", **fields,
    )


LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"], lora_dropout=0.0)


def perturb(model, seed):
    """The same deterministic change to every trainable parameter of either trainer's model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@dataclass
class Result:
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    metrics: dict[str, float]  # what the trainer logged for this batch


def loss_and_grads(trainer, seed=PERTURB_SEED_KL_POSITIVE):
    perturb(trainer.model, seed)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(ROWS)])
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    logged = getattr(trainer, "_metrics", None) or trainer._stored_metrics  # CPOTrainer keeps its own store
    metrics = {name: values[-1] for name, values in logged["train"].items()}
    return Result(loss.detach(), grads, metrics)


def differences(ours, native):
    loss_a, grads_a, loss_b, grads_b = ours.loss, ours.grads, native.loss, native.grads
    assert grads_a.keys() == grads_b.keys() and grads_a
    loss_diff = (loss_a - loss_b).abs().item()
    grad_diff = max((grads_a[name] - grads_b[name]).abs().max().item() for name in grads_a)
    return loss_diff, grad_diff


def assert_bitwise(ours, native):
    assert differences(ours, native) == (0.0, 0.0)


def assert_same_metrics(ours, native):
    """The same metric names as TRL, with the same values (float32 means; the order of the
    gathered sums may differ, hence 1e-6 relative)."""
    assert ours.metrics.keys() == native.metrics.keys()
    for name, value in native.metrics.items():
        assert ours.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def assert_wrong(ours, native):
    loss_diff, grad_diff = differences(ours, native)
    assert max(loss_diff, grad_diff) > WRONG_BY, (loss_diff, grad_diff)


# ---- deliberately wrong variants, for the negative controls ---------------------------


@preference_loss(data="paired", needs_reference=False)
def dpo_without_reference(batch, beta=0.1):
    """DPO's sigmoid on raw log-probs: what DPO would be if the reference were dropped."""
    return -F.logsigmoid(beta * (batch.chosen_logps - batch.rejected_logps)), {}


@preference_loss(data="unpaired", needs_reference=True, needs_kl_reference=True)
def kto_without_kl_reference(batch, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """KTO with z_ref = 0: the KL reference point ignored."""
    logratios = batch.logratios
    losses = torch.where(
        batch.labels, desirable_weight * (1 - torch.sigmoid(beta * logratios)),
        undesirable_weight * (1 - torch.sigmoid(-beta * logratios)),
    )
    return losses, unpaired_reward_metrics(beta * logratios, batch.labels)


@preference_loss(data="paired", needs_reference=False)
def cpo_sequence_mean_nll(batch, beta=0.1, cpo_alpha=1.0):
    """CPO with the NLL averaged per sequence first (TRL takes one token mean over the batch)."""
    nll = (-batch.chosen_logps / batch.chosen_lengths).mean()
    losses = -F.logsigmoid(beta * (batch.chosen_logps - batch.rejected_logps)) + cpo_alpha * nll
    return losses, paired_reward_metrics(beta * batch.chosen_logps, beta * batch.rejected_logps)


@preference_loss(data="paired", needs_reference=False)
def simpo_summed(batch, beta=2.0, simpo_gamma=1.0):
    """SimPO on summed instead of length-normalized log-probs."""
    return -F.logsigmoid(beta * (batch.chosen_logps - batch.rejected_logps - simpo_gamma / beta)), {}


class WrongVariants:
    @hookimpl
    def register_preference_losses(self, register):
        for fn in (dpo_without_reference, kto_without_kl_reference, cpo_sequence_mean_nll, simpo_summed):
            register(fn.__name__, fn)


@pytest.fixture
def wrong_variants():
    plugins.get_plugin_manager().register(WrongVariants(), name="test-wrong-variants")
    plugins.invalidate_registry()


# ---- TRL's native trainers, each computed once per module ------------------------------


class NativeResults:
    """TRL's loss and gradients per case, built on first use and reused by the negative controls."""

    def __init__(self, model_dir, output_dir, paired, unpaired):
        self.model_dir, self.output_dir = model_dir, output_dir
        self.paired, self.unpaired = paired, unpaired
        self.cache = {}

    def _once(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def dpo(self, loss_type, mode="full"):
        def build():
            fields = {"precompute_ref_log_probs": True} if mode == "precompute" else {}
            trainer = DPOTrainer(
                self.model_dir, args=DPOConfig(loss_type=[loss_type], **trl_args(self.output_dir, **fields)),
                train_dataset=self.paired, peft_config=LORA if mode == "lora" else None,
            )
            return loss_and_grads(trainer)

        return self._once(("dpo", loss_type, mode), build)

    def kto(self, mode="full", seed=PERTURB_SEED_KL_POSITIVE):

        def build():
            trainer = KTOTrainer(
                self.model_dir, args=KTOConfig(**trl_args(self.output_dir)), train_dataset=self.unpaired,
                peft_config=LORA if mode == "lora" else None,
            )
            return loss_and_grads(trainer, seed)

        return self._once(("kto", mode, seed), build)

    def cpo(self, loss_type, **fields):
        def build():
            trainer = CPOTrainer(
                self.model_dir, args=CPOConfig(loss_type=loss_type, **trl_args(self.output_dir, **fields)),
                train_dataset=self.paired.remove_columns(["answer"]),
            )
            return loss_and_grads(trainer)

        return self._once(("cpo", loss_type, tuple(sorted(fields.items()))), build)


@pytest.fixture(scope="module")
def native(tiny_model_dir, tmp_path_factory, paired_rows, unpaired_rows):
    return NativeResults(tiny_model_dir, str(tmp_path_factory.mktemp("native")), paired_rows, unpaired_rows)


@pytest.fixture
def run_ours(tiny_model_dir, tmp_path, paired_rows, unpaired_rows):
    """rlplug's trainer for an algorithm: (Result, trainer)."""

    def run(algorithm, mode="full", seed=PERTURB_SEED_KL_POSITIVE, **build):
        rows = unpaired_rows if algorithm == "kto" else paired_rows
        fields = {"precompute_ref_log_probs": True} if mode == "precompute" else {}
        trainer = build_trainer(
            algorithm, model=tiny_model_dir, train_dataset=rows, peft_config=LORA if mode == "lora" else None,
            **build, **trl_args(tmp_path, **fields),
        )
        return loss_and_grads(trainer, seed), trainer

    return run


# ---- DPO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora", "precompute"])
def test_dpo_matches_dpotrainer_sigmoid_bitwise(run_ours, native, mode):
    result, _ = run_ours("dpo", mode)
    assert_bitwise(result, native.dpo("sigmoid", mode))
    assert_same_metrics(result, native.dpo("sigmoid", mode))


def test_dpo_negative_control_without_reference(run_ours, native, wrong_variants):
    result, _ = run_ours("dpo", preference_loss="dpo_without_reference")
    assert_wrong(result, native.dpo("sigmoid"))


# ---- IPO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ipo_matches_dpotrainer_ipo_bitwise(run_ours, native, mode):
    result, _ = run_ours("ipo", mode)
    assert_bitwise(result, native.dpo("ipo", mode))
    assert_same_metrics(result, native.dpo("ipo", mode))


def test_ipo_negative_control_unnormalized_form(run_ours, native):
    result, _ = run_ours("ipo", component_params={"preference_loss": {"normalize_length": False}})
    assert_wrong(result, native.dpo("ipo"))


# ---- KTO ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, seed",
    [("full", PERTURB_SEED_KL_POSITIVE), ("full", PERTURB_SEED_KL_NEGATIVE), ("lora", PERTURB_SEED_KL_POSITIVE)],
)
def test_kto_matches_ktotrainer(run_ours, native, mode, seed):
    result, _ = run_ours("kto", mode, seed)
    expected = native.kto(mode, seed)
    assert result.metrics["kl"] == expected.metrics["kl"]
    if (mode, seed) == ("full", PERTURB_SEED_KL_POSITIVE):
        assert expected.metrics["kl"] > 0.05  # the clamp is inactive: z_ref really enters the loss
    if seed == PERTURB_SEED_KL_NEGATIVE:
        assert expected.metrics["kl"] == 0.0  # TRL's clamp is active
    assert (result.loss - expected.loss).abs().item() <= KTO_LOSS_TOLERANCE
    assert result.grads.keys() == expected.grads.keys()
    assert all(torch.equal(result.grads[name], expected.grads[name]) for name in expected.grads)
    assert_same_metrics(result, expected)


def test_kto_negative_control_without_kl_reference(run_ours, native, wrong_variants):
    result, _ = run_ours("kto", preference_loss="kto_without_kl_reference")
    assert_wrong(result, native.kto())


def test_kto_negative_control_unclamped_kl(run_ours, native):
    # With a negative KL estimate TRL clamps z_ref to 0; the seeds' unclamped z_ref differs.
    result, _ = run_ours(
        "kto", seed=PERTURB_SEED_KL_NEGATIVE, component_params={"preference_loss": {"clamp_kl": False}}
    )
    assert_wrong(result, native.kto(seed=PERTURB_SEED_KL_NEGATIVE))


# ---- CPO and SimPO against trl.experimental.cpo.CPOTrainer -------------------------------


CPO_SHARED_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                      "logps/rejected")


def assert_close(result, native_result, tolerance, metrics=CPO_SHARED_METRICS):
    loss_diff, grad_diff = differences(result, native_result)
    assert loss_diff <= tolerance and grad_diff <= tolerance, (loss_diff, grad_diff)
    # CPOTrainer's logits/* average the full logits, a different quantity; the reward metrics agree.
    for name in metrics:
        assert result.metrics[name] == pytest.approx(native_result.metrics[name], rel=1e-6, abs=1e-6), name


def test_cpo_matches_cpotrainer_sigmoid_with_nll(run_ours, native):
    result, trainer = run_ours("cpo")
    assert trainer.ref_model is None
    assert_close(result, native.cpo("sigmoid", cpo_alpha=1.0), CPO_TOLERANCE, (*CPO_SHARED_METRICS, "nll_loss"))


def test_cpo_negative_control_sequence_mean_nll(run_ours, native, wrong_variants):
    result, _ = run_ours("cpo", preference_loss="cpo_sequence_mean_nll")
    assert_wrong(result, native.cpo("sigmoid", cpo_alpha=1.0))


SIMPO_NATIVE = {"cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 1.0}


def test_simpo_matches_cpotrainer_simpo_without_nll(run_ours, native):
    result, trainer = run_ours("simpo")
    assert trainer.ref_model is None
    # CPOTrainer logs the length-averaged log-probs of SimPO as logps/*; rlplug logs summed log-probs.
    assert_close(result, native.cpo("simpo", **SIMPO_NATIVE), CPO_TOLERANCE, CPO_SHARED_METRICS[:4])


def test_simpo_negative_control_summed_logps(run_ours, native, wrong_variants):
    result, _ = run_ours("simpo", preference_loss="simpo_summed")
    assert_wrong(result, native.cpo("simpo", **SIMPO_NATIVE))
