"""Token-chunked log-probs inside the three adapters equal TRL's own fused head (≤1e-6).

For each family (online/GRPO, paired/DPO, unpaired/KTO) the same trainer is built twice on
the tiny float32 model: ``logprob_chunk_size=3`` (rlplug's chunked head: 3 tokens per
chunk, so every batch spans many chunks) and ``0`` (TRL 1.16's fused head, which on CPU
scores the whole batch in one tile here). Weights are perturbed identically, one batch
is scored, and the loss and every gradient must agree to 1e-6: the same formula, in a
different float32 order (chunked matmuls, weight-gradient sums over chunks). A spy
checks that the chunked head really scored the policy and reference passes. Negative
control: the chunked head with a wrong temperature (1.3) or labels shifted by one token
must differ from TRL by far more than the tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import set_seed

import rlplug.trl.chunked_forward as chunked_forward
from rlplug import build_trainer
from rlplug.demo.arithmetic import all_problems
from rlplug.demo.arithmetic_preference import preference_dataset

ROWS = 8
TOLERANCE = 1e-6
WRONG_BY = 1e-4


def perturb(model, seed=18):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def common(tmp_path, **fields):
    return dict(output_dir=str(tmp_path), bf16=False, gradient_checkpointing=False, report_to="none",
                use_cpu=True, **fields)


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def score(trainer, inputs):
    model = trainer.model
    trainer.current_gradient_accumulation_steps = 1  # Trainer.train sets it; here one micro-step is scored
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def grpo(model_dir, tmp_path, chunk, sabotage=None):
    set_seed(0)
    rows = Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:8]])
    trainer = build_trainer(
        "grpo", model=model_dir, reward_funcs=digit_fraction_reward, train_dataset=rows, logprob_chunk_size=chunk,
        beta=0.04, temperature=0.7, per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        steps_per_generation=1, num_iterations=2, **common(tmp_path),
    )
    if sabotage:
        sabotage(trainer)
    perturb(trainer.model)
    set_seed(1)
    inputs = trainer._generate_and_score_completions([rows[0]] * 4)
    perturb(trainer.model, seed=5)  # the policy moves after generation: ratios differ from 1
    return score(trainer, inputs), inputs


def preference(kind, model_dir, tmp_path, chunk, sabotage=None, peft_config=None):
    algorithm = {"paired": "dpo", "unpaired": "kto"}[kind]
    rows = preference_dataset(kind).select(range(2 * ROWS))
    trainer = build_trainer(algorithm, model=model_dir, train_dataset=rows, logprob_chunk_size=chunk,
                            per_device_train_batch_size=ROWS, peft_config=peft_config, **common(tmp_path))
    if sabotage:
        sabotage(trainer)
    perturb(trainer.model)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(ROWS)])
    return score(trainer, inputs)


def run(family, model_dir, tmp_path, chunk, sabotage=None):
    if family == "online":
        return grpo(model_dir, tmp_path, chunk, sabotage)[0]
    return preference(family, model_dir, tmp_path, chunk, sabotage)


def differences(ours, native):
    (loss_a, grads_a), (loss_b, grads_b) = ours, native
    assert grads_a.keys() == grads_b.keys() and grads_a
    return (loss_a - loss_b).abs().item(), max((grads_a[k] - grads_b[k]).abs().max().item() for k in grads_a)


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = chunked_forward.chunked_token_logprobs

    def counting(hidden, *args, **kwargs):
        calls.append((hidden.shape[0], hidden.requires_grad))
        return real(hidden, *args, **kwargs)

    monkeypatch.setattr(chunked_forward, "chunked_token_logprobs", counting)
    return calls


@pytest.mark.parametrize("family", ["online", "paired", "unpaired"])
def test_chunked_equals_trl_fused_head(family, tiny_model_dir, tmp_path, spy):
    native = run(family, tiny_model_dir, tmp_path / "native", chunk=0)
    assert spy == []  # chunk 0: TRL's head throughout
    ours = run(family, tiny_model_dir, tmp_path / "ours", chunk=3)
    loss_diff, grad_diff = differences(ours, native)
    assert loss_diff <= TOLERANCE and grad_diff <= TOLERANCE, (loss_diff, grad_diff)
    assert native[0].abs().item() > 1e-3  # a loss that is not trivially zero
    assert any(requires_grad for _, requires_grad in spy), "the policy's gradient pass was not chunked"
    assert any(not requires_grad for _, requires_grad in spy), "the reference / old-policy pass was not chunked"
    assert all(n > 3 for n, _ in spy)  # every pass spans several chunks of 3 tokens


@pytest.mark.parametrize("kind", ["paired", "unpaired"])
def test_lora_chunked_equals_trl_fused_head(kind, tiny_model_dir, tmp_path, spy):
    """Under PEFT the head is added to the base model; the reference is the adapter-disabled policy."""
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"], lora_dropout=0.0)
    native = preference(kind, tiny_model_dir, tmp_path / "native", 0, peft_config=lora)
    ours = preference(kind, tiny_model_dir, tmp_path / "ours", 3, peft_config=lora)
    loss_diff, grad_diff = differences(ours, native)
    assert loss_diff <= TOLERANCE and grad_diff <= TOLERANCE, (loss_diff, grad_diff)
    assert all("lora" in name for name in ours[1])  # only the adapter trains
    assert any(requires_grad for _, requires_grad in spy) and any(not requires_grad for _, requires_grad in spy)


def test_grpo_old_and_reference_logps_equal_trl(tiny_model_dir, tmp_path):
    _, native_inputs = grpo(tiny_model_dir, tmp_path / "native", chunk=0)
    _, inputs = grpo(tiny_model_dir, tmp_path / "ours", chunk=3)
    assert torch.equal(inputs["completion_ids"], native_inputs["completion_ids"])
    for key in ("old_per_token_logps", "ref_per_token_logps"):
        torch.testing.assert_close(inputs[key], native_inputs[key], rtol=0, atol=TOLERANCE)


def _wrong_temperature(trainer):
    policy = trainer.model
    chunked_forward.add_token_chunked_head(policy, temperature=1.3, chunk_size=3)


def _shifted_labels(trainer):
    policy = trainer.model
    forward = policy.forward

    def shifted(*args, labels=None, **kwargs):
        if labels is not None and kwargs.get("fused_lm_head"):
            labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
        return forward(*args, labels=labels, **kwargs)

    policy.forward = shifted


@pytest.mark.parametrize("family", ["online", "paired", "unpaired"])
@pytest.mark.parametrize("sabotage", [_wrong_temperature, _shifted_labels], ids=["temperature", "off_by_one"])
def test_negative_control_wrong_head_is_caught(family, sabotage, tiny_model_dir, tmp_path):
    native = run(family, tiny_model_dir, tmp_path / "native", chunk=0)
    wrong = run(family, tiny_model_dir, tmp_path / "wrong", chunk=3, sabotage=sabotage)
    assert max(differences(wrong, native)) > WRONG_BY


def test_switch_resolution():
    resolve = chunked_forward.resolve_chunk_size
    assert resolve("auto", 151936) == chunked_forward.DEFAULT_LOGPROB_CHUNK_SIZE
    assert resolve("auto", 32768) == chunked_forward.DEFAULT_LOGPROB_CHUNK_SIZE
    assert resolve("auto", 32000) is None
    assert resolve(0, 151936) is None and resolve(None, 151936) is None
    assert resolve(64, 100) == 64
    for bad in (-1, "big", 1.5, True):
        with pytest.raises(ValueError, match="logprob_chunk_size"):
            resolve(bad, 151936)


def test_auto_keeps_trl_head_for_the_small_tiny_vocabulary(tiny_model_dir, tmp_path):
    rows = preference_dataset("paired").select(range(4))
    trainer = build_trainer("dpo", model=tiny_model_dir, train_dataset=rows, **common(tmp_path))
    assert trainer.logprob_chunk_size is None
    trainer = build_trainer("dpo", model=tiny_model_dir, train_dataset=rows, logprob_chunk_size=5, **common(tmp_path))
    assert trainer.logprob_chunk_size == 5
