"""Parity: sampling corrections and reward scaling against TRL's native GRPOTrainer, one batch.

Set-up, the same for the native trainer and rlplug's: one generation batch (2 prompts x 4
completions) from the same weights and seed; then both models are moved by the same
perturbation, so the current log-probs differ from the generation-time ones (the
off-policy mask has something to see); then each trainer's ``_compute_loss`` runs on its
batch and the loss and every parameter's gradient are compared bitwise (``torch.equal``).

vLLM is not needed: ``_generate`` is wrapped to return the trainer's own completions with
fabricated sampler log-probs (the model's own, shifted by seeded noise, one of them
``None`` as vLLM reports an unscorable token), and ``use_vllm`` is switched on after
construction, so TRL's native code computes ``sampling_per_token_logps`` and its
``importance_sampling_ratio`` exactly as with vLLM. rlplug selects its correction by name
here (``use_vllm=True`` at construction would start vLLM); that TRL's own fields select the
same corrections is tested in tests/test_sampling_corrections.py.

Each test has a negative control: the rlplug run without the correction, or with another
mode, differs from the native one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from rlplug.core.plugins import get_registry
from rlplug.demo.arithmetic import all_problems
from rlplug.trl.build import build_trainer

SEED = 7
CONFIG: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    num_generations=4,
    steps_per_generation=2,  # GA (1) is not a multiple of it: TRL computes old log-probs at generation
    gradient_accumulation_steps=1,
    max_completion_length=8,
    bf16=False,
    seed=SEED,
    report_to="none",
    save_strategy="no",
    disable_tqdm=True,
    use_cpu=True,
)
NATIVE_LOSS = {"loss_type": "grpo"}  # rlplug's "grpo" recipe; rlplug selects it by the algorithm name


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def length_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """A second objective on another scale, for multi-reward aggregation."""
    return [float(len(text)) for text in completions]


def prompts() -> Dataset:
    return Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:2]])


def generation_inputs() -> list[dict[str, Any]]:
    return [row for row in prompts() for _ in range(CONFIG["num_generations"])]


def fake_sampler(trainer: Any, noise: float) -> None:
    """Make ``trainer`` behave as if vLLM sampled: its completions, with fabricated sampler log-probs."""
    original = trainer._generate
    generator = torch.Generator().manual_seed(99)

    def generate(prompts: list) -> tuple:
        trainer.use_vllm = False
        result = list(original(prompts))
        trainer.use_vllm = True
        prompt_ids, completion_ids = result[0], result[1]
        logprobs = []
        with torch.no_grad():
            for prompt, completion in zip(prompt_ids, completion_ids):
                ids = torch.tensor([prompt + completion])
                logits = trainer.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
                own = torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
                shifted = own + noise * torch.randn(own.shape, generator=generator)
                logprobs.append(shifted.tolist())
        logprobs[1][0] = None  # vLLM's unscorable token
        result[4] = logprobs
        return tuple(result)

    trainer._generate = generate
    trainer.use_vllm = True


def perturb(model: Any) -> None:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def loss_and_grads(trainer: Any, sampler_noise: float | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Generate one batch at the saved weights, perturb, then one loss and its gradients."""
    if sampler_noise is not None:
        fake_sampler(trainer, sampler_noise)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(SEED)
    batch = trainer._generate_and_score_completions(generation_inputs())
    perturb(trainer.model)
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, batch


def native_run(model_dir: str, tmp_path: Any, sampler_noise: float | None = None, reward_funcs=None, **fields: Any):
    args = GRPOConfig(output_dir=str(tmp_path / "native"), **{**CONFIG, **NATIVE_LOSS, **fields})
    trainer = GRPOTrainer(
        model=model_dir, reward_funcs=reward_funcs or [digit_fraction_reward], args=args, train_dataset=prompts()
    )
    return loss_and_grads(trainer, sampler_noise)


def rlplug_run(
    model_dir: str, tmp_path: Any, sampler_noise: float | None = None, corrections: tuple[str, ...] = (),
    reward_funcs=None, **fields: Any,
):
    recipe = replace(get_registry().get("algorithms", "grpo"), sampling_corrections=corrections)
    trainer = build_trainer(
        recipe, model=model_dir, reward_funcs=reward_funcs or [digit_fraction_reward], train_dataset=prompts(),
        output_dir=str(tmp_path / "rlplug"), **{**CONFIG, **fields},
    )
    return loss_and_grads(trainer, sampler_noise)


def assert_bitwise(native: tuple, ours: tuple) -> None:
    assert torch.equal(native[0], ours[0]), f"loss: native {native[0].item()!r} != rlplug {ours[0].item()!r}"
    assert native[1].keys() == ours[1].keys()
    for name in native[1]:
        assert torch.equal(native[1][name], ours[1][name]), (
            f"{name}: max abs grad diff {(native[1][name] - ours[1][name]).abs().max().item()}"
        )


def differs(native: tuple, ours: tuple) -> bool:
    return not torch.equal(native[0], ours[0]) and any(
        not torch.equal(native[1][name], ours[1][name]) for name in native[1]
    )


# ---- off-policy sequence mask (DeepSeek-V3.2) ------------------------------------------


def mean_divergences(batch: dict, logps_source: str) -> torch.Tensor:
    """What the mask thresholds (from the batch, before the perturbation, is enough to pick a threshold)."""
    mask = batch["completion_mask"].float()
    diff = torch.nan_to_num(batch[logps_source] - batch["old_per_token_logps"], nan=0.0)
    return (diff * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


@pytest.mark.parametrize("with_sampler", [False, True], ids=["old_logps", "sampler_logps"])
def test_off_policy_mask_bitwise_equal_to_native(tiny_model_dir, tmp_path, with_sampler):
    noise = 0.3 if with_sampler else None
    fields = {"vllm_importance_sampling_correction": False}
    threshold = 0.02
    native = native_run(tiny_model_dir, tmp_path, noise, off_policy_mask_threshold=threshold, **fields)
    # TRL's field selects rlplug's correction (no name given).
    ours = rlplug_run(tiny_model_dir, tmp_path, noise, off_policy_mask_threshold=threshold, **fields)
    assert_bitwise(native, ours)

    # Not vacuous: the mask drops some sequence and keeps others, so it changes the loss.
    unmasked = native_run(tiny_model_dir, tmp_path, noise, **fields)
    assert differs(native, unmasked)
    # Negative control: rlplug without the correction is caught.
    assert differs(native, rlplug_run(tiny_model_dir, tmp_path, noise, **fields))


# ---- sampler/trainer mismatch (vLLM importance sampling) ---------------------------------

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
# Bounds chosen so that every mode both keeps and cuts some ratios at noise 0.3 (a sequence's
# ratio is a product over its tokens, so its bounds are wider).
BOUNDS = {
    "token": {"vllm_importance_sampling_clip_min": 0.8, "vllm_importance_sampling_clip_max": 1.25},
    "sequence": {"vllm_importance_sampling_clip_min": 0.5, "vllm_importance_sampling_clip_max": 2.0},
}


@pytest.mark.parametrize("mode", MODES)
def test_sampler_importance_weights_bitwise_equal_to_native(tiny_model_dir, tmp_path, mode):
    bounds = BOUNDS[mode.split("_")[0]]
    fields = {"vllm_importance_sampling_mode": mode, **bounds}
    native = native_run(tiny_model_dir, tmp_path, 0.3, **fields)
    ours = rlplug_run(tiny_model_dir, tmp_path, 0.3, ("sampler_importance_weights",), **fields)
    assert_bitwise(native, ours)

    ratio = native[2]["importance_sampling_ratio"]
    cut = (ratio == 0) if mode.endswith("mask") else (ratio == bounds["vllm_importance_sampling_clip_max"])
    cut = cut | (ratio == bounds["vllm_importance_sampling_clip_min"])
    assert bool(cut.any()) and bool((~cut & (ratio != 1)).any()), "the bounds must both cut and keep ratios"
    # Negative controls: no correction, and the other mode of the same level.
    assert differs(native, rlplug_run(tiny_model_dir, tmp_path, 0.3, **fields))
    other = mode.replace("truncate", "TMP").replace("mask", "truncate").replace("TMP", "mask")
    wrong = rlplug_run(
        tiny_model_dir, tmp_path, 0.3, ("sampler_importance_weights",),
        **{**fields, "vllm_importance_sampling_mode": other},
    )
    assert differs(native, wrong)


# ---- reward scaling before the advantage ---------------------------------------------


def test_scale_rewards_batch_bitwise_equal_to_native(tiny_model_dir, tmp_path):
    native = native_run(tiny_model_dir, tmp_path, scale_rewards="batch")
    ours = rlplug_run(tiny_model_dir, tmp_path, scale_rewards="batch")
    assert torch.equal(native[2]["advantages"], ours[2]["advantages"])
    assert_bitwise(native, ours)
    # Negative control: the group-scaled default differs (the group stds are not the batch std).
    group = rlplug_run(tiny_model_dir, tmp_path)
    assert not torch.equal(native[2]["advantages"], group[2]["advantages"])
    assert differs(native, group)


def test_normalize_then_sum_bitwise_equal_to_native(tiny_model_dir, tmp_path):
    funcs = [digit_fraction_reward, length_reward]
    fields = {"multi_objective_aggregation": "normalize_then_sum", "reward_weights": [1.0, 0.5]}
    native = native_run(tiny_model_dir, tmp_path, reward_funcs=funcs, **fields)
    ours = rlplug_run(tiny_model_dir, tmp_path, reward_funcs=funcs, **fields)
    assert torch.equal(native[2]["advantages"], ours[2]["advantages"])
    assert_bitwise(native, ours)
    # Negative control: summing first (the default) is another advantage.
    summed = rlplug_run(tiny_model_dir, tmp_path, reward_funcs=funcs, reward_weights=[1.0, 0.5])
    assert not torch.equal(native[2]["advantages"], summed[2]["advantages"])
    assert differs(native, summed)
