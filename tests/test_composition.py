"""Composition: a combination no recipe ships trains, and each chosen component does the work.

grpo's recipe with the advantage, policy loss and aggregation all replaced by name:
Dr.GRPO's group-mean advantage + GSPO's sequence-level clip + DAPO's global token mean.
Spies around the bound components record every call; the checks below hold for this
combination and fail for the plain grpo recipe (the negative control).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import set_seed

from rlplug.trl.build import build_trainer
from rlplug.core.resolve import BoundComponent
from rlplug.demo.arithmetic import all_problems

COMPOSED = {"advantage": "group_mean", "policy_loss": "gspo_clip", "aggregation": "global_token_mean"}
NUM_GENERATIONS = 4


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Fraction of the completion's characters that are digits: varies within a group."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def spy_on_components(trainer: Any) -> dict[str, list[tuple[tuple, Any]]]:
    """Wrap the trainer's bound components; each call is recorded as (args, result) by slot."""
    calls: dict[str, list[tuple[tuple, Any]]] = defaultdict(list)

    def spied(slot: str, bound: BoundComponent) -> BoundComponent:
        def fn(*args: Any, **params: Any) -> Any:
            result = bound.fn(*args, **params)
            calls[slot].append((args, result))
            return result

        return replace(bound, fn=fn)

    components = trainer.components
    slots = ("advantage", "policy_loss", "aggregation")
    trainer.components = replace(components, **{slot: spied(slot, getattr(components, slot)) for slot in slots})
    return calls


def train_two_steps(model_dir: str, output_dir: str, **components: str) -> tuple[Any, dict, list[torch.Tensor], list]:
    set_seed(0)
    trainer = build_trainer(
        "grpo", model=model_dir, reward_funcs=[digit_fraction_reward],
        train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:32]]),
        output_dir=output_dir, per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
        gradient_accumulation_steps=2, max_completion_length=6, max_steps=2, learning_rate=1e-2,
        bf16=False, use_cpu=True, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        **components,
    )
    calls = spy_on_components(trainer)
    losses: list[torch.Tensor] = []
    compute_loss = trainer.compute_loss

    def recording_compute_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = compute_loss(*args, **kwargs)
        losses.append(loss.detach().clone())
        return loss

    trainer.compute_loss = recording_compute_loss
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters()), "weights did not move"
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return trainer, calls, losses, logs


def check_group_mean_advantages(calls: dict) -> None:
    assert len(calls["advantage"]) >= 1
    for (rollout,), advantages in calls["advantage"]:
        grouped = rollout.rewards.view(-1, NUM_GENERATIONS)
        assert grouped.std(dim=1).gt(0).any(), "rewards are constant in every group: nothing to compare"
        expected = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).view(-1)
        assert torch.equal(advantages, expected), "advantages are not reward minus group mean"


def check_sequence_level_loss(calls: dict, losses: list[torch.Tensor]) -> None:
    assert len(calls["policy_loss"]) == len(losses) == 4  # 2 optimizer steps x 2 micro-batches
    for (logps, _old_logps, _advantages, _mask), (per_token_loss, metrics) in calls["policy_loss"]:
        assert per_token_loss.shape == (logps.shape[0], 1), "not a sequence-level loss"
        assert "clip_ratio/region_mean" in metrics


def check_aggregation_is_what_trains(calls: dict, losses: list[torch.Tensor]) -> None:
    assert len(calls["aggregation"]) == len(losses)
    for ((per_token_loss, _mask, ctx), aggregated), loss in zip(calls["aggregation"], losses):
        assert ctx.num_items_in_batch is not None, "global_token_mean needs the global token count"
        assert torch.equal(aggregated.detach(), loss), "the trained loss is not the aggregation's output"


def test_group_mean_gspo_global_token_mean_trains(tiny_model_dir, tmp_path):
    trainer, calls, losses, logs = train_two_steps(tiny_model_dir, str(tmp_path), **COMPOSED)
    assert {slot: getattr(trainer.components, slot).name for slot in COMPOSED} == COMPOSED
    check_group_mean_advantages(calls)
    check_sequence_level_loss(calls, losses)
    check_aggregation_is_what_trains(calls, losses)
    # The aggregation received the policy loss's output (plus no KL: beta is 0).
    for (_, (policy_out, _)), ((per_token_loss, _, _), _) in zip(calls["policy_loss"], calls["aggregation"]):
        assert per_token_loss is policy_out
    assert len(logs) == 2 and all("clip_ratio/region_mean" in entry and "reward" in entry for entry in logs)


def test_negative_control_plain_grpo_fails_the_composition_checks(tiny_model_dir, tmp_path):
    """grpo's own components (std-normalized advantages, token-level clip) fail the same checks."""
    _, calls, losses, _ = train_two_steps(tiny_model_dir, str(tmp_path))
    with pytest.raises(AssertionError, match="advantages are not reward minus group mean"):
        check_group_mean_advantages(calls)
    with pytest.raises(AssertionError, match="not a sequence-level loss"):
        check_sequence_level_loss(calls, losses)
    check_aggregation_is_what_trains(calls, losses)  # the spy sees grpo's own aggregation train
