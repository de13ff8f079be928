"""Parity: rlplug's GRPO-family recipes against TRL's native GRPOTrainer, bitwise.

For TRL ``loss_type`` grpo, dr_grpo, dapo and bnpo, each with beta = 0 and beta = 0.04,
the native trainer and rlplug's algorithm of the same name are trained for the same
few steps, from the same weights, with the same seed, data and thread count, in this
process. Every micro-step's loss, every optimizer step's gradients (recorded before the
optimizer steps, with gradient clipping off so a scale error cannot hide) and the final
weights must be equal bitwise (``torch.equal``). The one exception, with beta > 0, is
explained and checked in ``test_beta_004_equal_to_native_trl`` and
``test_beta_gradient_rounding_comes_only_from_the_shared_ratio``: losses stay bitwise,
gradients agree to float rounding (<= 1e-6, about 3e-8 measured).

Set-up that makes the comparison bite:
- bf16 off (float32 throughout);
- gradient_accumulation_steps = 2, steps_per_generation = 4 and num_iterations = 2, so
  TRL computes old log-probs at generation time and the loss uses them;
- a high learning rate, so the weights move between generation and each later loss:
  ratios differ from 1 and the clip is active (asserted from the logged clip fraction);
- a reward that varies within groups, so advantages are non-zero;
- beta > 0 loads the reference model from the local directory (a path, as TRL needs).

Native configurations that are the same algorithm as rlplug's recipe:
- rlplug ``dr_grpo`` uses the group-mean advantage without std scaling (Dr.GRPO paper),
  which is TRL ``loss_type="dr_grpo"`` with ``scale_rewards="none"``;
- rlplug ``dapo`` sets ``epsilon_high=0.28`` (clip-higher), so native gets it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer

from rlplug.trl.build import build_trainer
from rlplug.demo.arithmetic import all_problems

SEED = 1234
LEARNING_RATE = 3e-2
# Optimizer steps. One generation serves steps_per_generation * num_iterations / GA = 4 of them: two generations.
MAX_STEPS = 6

# TRL config fields shared by both trainers. max_grad_norm=0 turns clipping off.
COMMON_CONFIG: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    num_generations=4,
    gradient_accumulation_steps=2,
    steps_per_generation=4,
    num_iterations=2,
    max_completion_length=8,
    max_steps=MAX_STEPS,
    learning_rate=LEARNING_RATE,
    lr_scheduler_type="constant",
    max_grad_norm=0.0,
    bf16=False,
    seed=SEED,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
    use_cpu=True,
)

# rlplug algorithm -> the native config that is the same algorithm.
NATIVE_EQUIVALENT: dict[str, dict[str, Any]] = {
    "grpo": {"loss_type": "grpo"},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
    "dapo": {"loss_type": "dapo", "epsilon_high": 0.28},
    "bnpo": {"loss_type": "bnpo"},
}


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Fraction of the completion's characters that are digits: varies within a group."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def prompts() -> Dataset:
    return Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:64]])


@dataclass
class Record:
    """What one training run produced, step by step."""

    losses: list[torch.Tensor] = field(default_factory=list)
    grads: list[dict[str, torch.Tensor]] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    weights_after_step: list[dict[str, torch.Tensor]] = field(default_factory=list)
    steps_resynced: set[int] = field(default_factory=set)

    def logged(self, key: str) -> list[float]:
        return [log[key] for log in self.logs if key in log]


class _Recorder(TrainerCallback):
    def __init__(self, record: Record) -> None:
        self.record = record

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.record.grads.append(
            {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        )

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.record.weights_after_step.append({name: p.detach().clone() for name, p in model.named_parameters()})

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.record.logs.append(dict(logs or {}))


class _SyncWeights(TrainerCallback):
    """After each optimizer step, set the weights to the native run's and record if they differed."""

    def __init__(self, native_weights: list[dict[str, torch.Tensor]], record: Record) -> None:
        self.native_weights = native_weights
        self.record = record

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        target = self.native_weights[len(self.record.weights_after_step) - 1]
        for name, p in model.named_parameters():
            if not torch.equal(p, target[name]):
                self.record.steps_resynced.add(len(self.record.weights_after_step) - 1)
            p.copy_(target[name])


def train_and_record(trainer: Any, record: Record) -> Record:
    """Train with ``compute_loss`` wrapped to record each micro-step's loss."""
    compute_loss = trainer.compute_loss

    def recording_compute_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = compute_loss(*args, **kwargs)
        record.losses.append(loss.detach().clone())
        return loss

    trainer.compute_loss = recording_compute_loss
    set_seed(SEED)
    trainer.train()
    record.weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    return record


def run_native(model_dir: str, output_dir: str, beta: float, native: dict[str, Any]) -> Record:
    record = Record()
    set_seed(SEED)
    args = GRPOConfig(output_dir=output_dir, beta=beta, **COMMON_CONFIG, **native)
    trainer = GRPOTrainer(
        model=model_dir, reward_funcs=[digit_fraction_reward], args=args, train_dataset=prompts(),
        callbacks=[_Recorder(record)],
    )
    return train_and_record(trainer, record)


def run_rlplug(
    model_dir: str, output_dir: str, algorithm: str, beta: float, sync_to: Record | None = None, **overrides: Any
) -> Record:
    """rlplug's recipe; with ``sync_to``, its weights are set to that run's after every optimizer step."""
    record = Record()
    callbacks = [_Recorder(record)]
    if sync_to is not None:
        callbacks.append(_SyncWeights(sync_to.weights_after_step, record))
    set_seed(SEED)
    trainer = build_trainer(
        algorithm, model=model_dir, reward_funcs=[digit_fraction_reward], train_dataset=prompts(),
        callbacks=callbacks, output_dir=output_dir, beta=beta, **COMMON_CONFIG, **overrides,
    )
    return train_and_record(trainer, record)


def max_grad_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def assert_same_losses(native: Record, ours: Record) -> None:
    assert len(native.losses) == len(ours.losses) == MAX_STEPS * COMMON_CONFIG["gradient_accumulation_steps"]
    for step, (a, b) in enumerate(zip(native.losses, ours.losses)):
        assert torch.equal(a, b), f"micro-step {step}: native loss {a.item()!r} != rlplug {b.item()!r}"


def assert_bitwise_same_run(native: Record, ours: Record) -> None:
    """Losses, gradients and weights equal at every step, without any re-synchronization."""
    assert_same_losses(native, ours)
    assert len(native.grads) == len(ours.grads) == MAX_STEPS
    for step, (a, b) in enumerate(zip(native.grads, ours.grads)):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (
                f"optimizer step {step}, {name}: max abs grad diff {(a[name] - b[name]).abs().max().item()}"
            )
    assert ours.steps_resynced == set(), f"weights diverged after optimizer steps {sorted(ours.steps_resynced)}"
    for name in native.weights:
        assert torch.equal(native.weights[name], ours.weights[name]), f"final weight {name} differs"


def assert_not_vacuous(native: Record, beta: float) -> None:
    """Advantages are non-zero, gradients flow, ratios left the clip range; with beta, KL is non-zero."""
    assert max(native.logged("reward_std")) > 0
    assert any(not torch.equal(g, torch.zeros_like(g)) for g in native.grads[0].values())
    assert max(native.logged("clip_ratio/region_mean")) > 0
    if beta:
        assert max(native.logged("kl")) > 0


@pytest.mark.parametrize("algorithm", sorted(NATIVE_EQUIVALENT))
def test_beta_0_bitwise_equal_to_native_trl(tiny_model_dir, tmp_path, algorithm):
    native = run_native(tiny_model_dir, str(tmp_path / "native"), 0.0, NATIVE_EQUIVALENT[algorithm])
    ours = run_rlplug(tiny_model_dir, str(tmp_path / "rlplug"), algorithm, 0.0, sync_to=native)
    assert_not_vacuous(native, 0.0)
    assert_bitwise_same_run(native, ours)
    for key in ("reward", "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "entropy"):
        assert native.logged(key) == ours.logged(key), key


@pytest.mark.parametrize("algorithm", sorted(NATIVE_EQUIVALENT))
def test_beta_004_equal_to_native_trl(tiny_model_dir, tmp_path, algorithm):
    """Losses bitwise; gradients bitwise at ratio 1 and within 1e-6 otherwise.

    Why not bitwise: TRL computes the ratio rho = exp(logp - logp_old) once and uses the
    same tensor in the clipped surrogate and in the KL term (k3 * rho). rlplug's policy
    loss and KL placement are separate components, each computing rho itself, so autograd
    sums the gradient as rho * g_surrogate + rho * g_kl where TRL computes
    rho * (g_surrogate + g_kl). Forward values are identical (same ops on the same
    inputs), hence the bitwise losses; the gradients differ by float rounding (about
    1e-8 here). When rho is exactly 1 (the first optimizer step, before any update) the
    two sums agree exactly. Because such rounding is amplified over further steps at this
    learning rate, the rlplug run is put back on the native weights after every optimizer
    step, so each step compares the same batch at the same weights.
    """
    native = run_native(tiny_model_dir, str(tmp_path / "native"), 0.04, NATIVE_EQUIVALENT[algorithm])
    ours = run_rlplug(tiny_model_dir, str(tmp_path / "rlplug"), algorithm, 0.04, sync_to=native)
    assert_not_vacuous(native, 0.04)
    assert_same_losses(native, ours)
    assert len(native.grads) == len(ours.grads) == MAX_STEPS
    for name in native.grads[0]:
        assert torch.equal(native.grads[0][name], ours.grads[0][name]), name
    diffs = [max_grad_diff(a, b) for a, b in zip(native.grads, ours.grads)]
    assert max(diffs) <= 1e-6, diffs
    for key in ("reward", "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "entropy"):
        assert native.logged(key) == ours.logged(key), key


def test_wrong_aggregation_breaks_parity(tiny_model_dir, tmp_path):
    """Negative control: grpo with BNPO's token mean instead of the per-sequence mean is caught."""
    native = run_native(tiny_model_dir, str(tmp_path / "native"), 0.0, NATIVE_EQUIVALENT["grpo"])
    wrong = run_rlplug(
        tiny_model_dir, str(tmp_path / "rlplug"), "grpo", 0.0, sync_to=native, aggregation="local_token_mean"
    )
    with pytest.raises(AssertionError, match="micro-step 0"):
        assert_bitwise_same_run(native, wrong)
    assert max_grad_diff(native.grads[0], wrong.grads[0]) > 1e-6


def test_beta_gradient_rounding_comes_only_from_the_shared_ratio():
    """The explanation above, checked on tensors: TRL's formula with rho computed twice
    (once for the surrogate, once for the KL) reproduces rlplug's gradient bitwise, while
    TRL's shared rho differs from it by rounding only."""
    from rlplug.core.algorithm import KLSpec
    from rlplug.components.aggregation import AggregationContext, sequence_mean_token_mean
    from rlplug.components.kl import k3
    from rlplug.components.kl_placement import loss_kl_term
    from rlplug_grpo.losses import ppo_clip

    generator = torch.Generator().manual_seed(0)
    logps = (torch.randn(8, 6, generator=generator) * 0.5 - 2.0).requires_grad_()
    old_logps = logps.detach() + 0.3 * torch.randn(8, 6, generator=generator)
    ref_logps = logps.detach() + 0.3 * torch.randn(8, 6, generator=generator)
    advantages = torch.randn(8, 1, generator=generator)
    mask = (torch.rand(8, 6, generator=generator) > 0.2).float()
    beta, epsilon = 0.04, 0.2

    def aggregate(per_token_loss: torch.Tensor) -> torch.Tensor:
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / 2

    def trl_formula() -> torch.Tensor:
        """TRL 1.16 ``GRPOTrainer._compute_loss`` (grpo, beta > 0), op for op: one rho for both terms."""
        coef_1 = torch.exp(logps - old_logps)
        per_token_kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token_kl = per_token_kl * coef_1
        coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
        return aggregate(per_token_loss + beta * per_token_kl)

    def trl_formula_with_rho_twice() -> torch.Tensor:
        """The same formula, with the KL term's rho computed anew after the surrogate."""
        coef_1 = torch.exp(logps - old_logps)
        coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
        per_token_kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token_kl = per_token_kl * torch.exp(logps - old_logps)
        return aggregate(per_token_loss + beta * per_token_kl)

    per_token_loss, _ = ppo_clip(logps, old_logps, advantages, mask, epsilon=epsilon)
    per_token_loss = per_token_loss + loss_kl_term(
        KLSpec(estimator="k3", placement="loss", coef=beta, future_kl_correction=False), k3, logps, old_logps, ref_logps
    )
    ours = sequence_mean_token_mean(per_token_loss, mask, AggregationContext(gradient_accumulation_steps=2))
    shared, twice = trl_formula(), trl_formula_with_rho_twice()
    (grad_ours,) = torch.autograd.grad(ours, logps)
    (grad_shared,) = torch.autograd.grad(shared, logps)
    (grad_twice,) = torch.autograd.grad(twice, logps)

    assert torch.equal(ours, shared) and torch.equal(ours, twice)
    assert torch.equal(grad_ours, grad_twice)
    assert not torch.equal(grad_ours, grad_shared)
    assert (grad_ours - grad_shared).abs().max().item() <= 1e-6
