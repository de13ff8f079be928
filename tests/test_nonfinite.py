"""A component that returns NaN stops the run with a message naming the step and the component,
before the optimizer step, so the last checkpoint holds finite weights; with
``on_nonfinite="skip"`` the step is dropped instead and training goes on."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rlplug import build_trainer
from rlplug.core.preference import paired_reward_metrics, preference_loss
from rlplug.demo.arithmetic import train_dataset
from rlplug.demo.arithmetic_preference import preference_dataset
from rlplug.trl.guards import FiniteGuard, NonFiniteError

POISONED_STEP = 3


def poisoned_after(step: int):
    """A REINFORCE policy loss, -A_t·π/sg(π) per token, that returns NaN on its ``step``-th call."""
    calls = []

    def poisoned_reinforce(logps, old_logps, advantages, mask):
        calls.append(1)
        per_token = -advantages * torch.exp(logps - logps.detach())
        if len(calls) == step:
            per_token = per_token * float("nan")  # NaN in the value and in the gradient
        return per_token, {}

    return poisoned_reinforce


def count_of_ones(prompts, completions, **kwargs):
    return [float(completion.count("1")) for completion in completions]


def online_trainer(model_dir, output_dir, **overrides):
    fields = dict(
        per_device_train_batch_size=8, num_generations=4, max_completion_length=3, learning_rate=5e-2,
        bf16=False, gradient_checkpointing=False, report_to="none", logging_steps=1, seed=3, max_steps=4,
        save_strategy="steps", save_steps=1, disable_tqdm=True, use_cpu=True,
    )
    fields.update(overrides)
    return build_trainer("grpo", model=model_dir, reward_funcs=[count_of_ones], train_dataset=train_dataset(),
                         policy_loss="poisoned_reinforce", kl={"coef": 0.0}, output_dir=str(output_dir), **fields)


def checkpoint_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / f"checkpoint-{step}" / "model.safetensors"))


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())


def test_a_nan_policy_loss_stops_the_run_naming_step_and_component(tiny_model_dir, tmp_path, register_component):
    register_component("policy_losses", "poisoned_reinforce", poisoned_after(POISONED_STEP))
    trainer = online_trainer(tiny_model_dir, tmp_path)
    with pytest.raises(NonFiniteError) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert message.startswith(f"step {POISONED_STEP}: policy loss 'poisoned_reinforce' returned ")
    assert "the weights and the last checkpoint are intact" in message
    saved = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert saved == list(range(1, POISONED_STEP))
    last = checkpoint_weights(tmp_path, POISONED_STEP - 1)
    assert all_finite(last)
    assert not all(torch.equal(last[name], value) for name, value in checkpoint_weights(tmp_path, 1).items())
    in_memory = {name: p.detach() for name, p in trainer.model.named_parameters()}
    assert all(torch.equal(in_memory[name], last[name]) for name in last)  # the poisoned step changed nothing


def test_skip_drops_the_poisoned_step_and_training_goes_on(tiny_model_dir, tmp_path, register_component):
    register_component("policy_losses", "poisoned_reinforce", poisoned_after(POISONED_STEP))
    trainer = online_trainer(tiny_model_dir, tmp_path, on_nonfinite="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert trainer.state.global_step == 4 and trainer.finite_guard.skipped_steps == 1
    skipped = [str(w.message) for w in caught if "optimizer step skipped" in str(w.message)]
    assert len(skipped) == 1
    assert re.fullmatch(
        rf"step {POISONED_STEP}: policy loss 'poisoned_reinforce' returned (\d+) non-finite value\(s\) of \1; "
        r"optimizer step skipped \(1 so far\)", skipped[0]
    ), skipped[0]
    before, after = checkpoint_weights(tmp_path, POISONED_STEP - 1), checkpoint_weights(tmp_path, POISONED_STEP)
    assert all(torch.equal(before[name], after[name]) for name in before)  # the skipped step moved nothing
    final = checkpoint_weights(tmp_path, 4)
    assert all_finite(final) and not all(torch.equal(final[name], after[name]) for name in final)


def test_without_the_guard_the_nan_reaches_the_weights(tiny_model_dir, tmp_path, register_component):
    """Negative control: the same poisoned run with the guard taken off writes NaN weights."""
    register_component("policy_losses", "poisoned_reinforce", poisoned_after(POISONED_STEP))
    trainer = online_trainer(tiny_model_dir, tmp_path, max_steps=POISONED_STEP)  # NaN weights break generation after
    trainer.finite_guard.detach(trainer)
    trainer.train()
    assert not all_finite(checkpoint_weights(tmp_path, POISONED_STEP))


def test_the_gradient_check_names_the_parameter(tiny_model_dir, tmp_path):
    guard = FiniteGuard()
    model = torch.nn.Linear(2, 1)
    model.weight.grad = torch.tensor([[1.0, float("inf")]])
    model.bias.grad = torch.zeros(1)
    state = type("State", (), {"global_step": 6})()
    with pytest.raises(NonFiniteError, match=r"^step 7: the gradient of weight is not finite"):
        guard.on_pre_optimizer_step(None, state, None, model=model)
    model.weight.grad = torch.ones(1, 2)
    guard.on_pre_optimizer_step(None, state, None, model=model)  # finite: nothing happens


@preference_loss(data="paired", needs_reference=True)
def poisoned_dpo(batch, beta=0.1):
    """DPO's sigmoid loss, -log σ(β·margin), that is NaN for every pair."""
    chosen = beta * (batch.chosen_logps - batch.ref_chosen_logps)
    rejected = beta * (batch.rejected_logps - batch.ref_rejected_logps)
    return -F.logsigmoid(chosen - rejected) * float("nan"), paired_reward_metrics(chosen, rejected)


def test_a_nan_preference_loss_stops_the_run(tiny_model_dir, tmp_path, register_component):
    register_component("preference_losses", "poisoned_dpo", poisoned_dpo)
    trainer = build_trainer(
        "dpo", model=tiny_model_dir, preference_loss="poisoned_dpo",
        train_dataset=preference_dataset("paired").select(range(16)), output_dir=str(tmp_path),
        per_device_train_batch_size=8, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True, max_steps=2,
    )
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(NonFiniteError, match=r"^step 1: preference loss 'poisoned_dpo' returned 8 non-finite"):
        trainer.train()
    assert all(torch.equal(initial[name], p) for name, p in trainer.model.named_parameters())


def test_on_nonfinite_is_checked_before_anything_is_built():
    with pytest.raises(ValueError, match="on_nonfinite must be one of error, skip; got 'ignore'"):
        build_trainer("grpo", model="/nonexistent", on_nonfinite="ignore")
