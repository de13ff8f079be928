"""DAPO dynamic sampling: the group filter, the refill loop and its cap, and the online adapter
with it (half the groups have equal rewards: dropped, refilled to full size, cost logged)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset

from rlplug.components.dynamic_sampling import informative_groups, plan_dynamic_batch
from rlplug.core.algorithm import DynamicSamplingSpec, dynamic_sampling_spec
from rlplug.trl.build import build_trainer

NAN = float("nan")


def test_informative_groups_ignores_nan_and_needs_two_distinct_rewards():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, NAN, 1.0, NAN, NAN, NAN, 2.0, 2.0, 2.0 + 1e-6])
    # [1, 1] equal | [0, 1] | [nan, 1] one scorable | [nan, nan] | [nan, 2] | [2, 2 + 1e-6]
    assert informative_groups(rewards[:12], 2).tolist() == [False, True, False, False, False, True]


def rounds_of(*rewards: list[float]):
    calls = []

    def generate_round(index: int) -> torch.Tensor:
        calls.append(index)
        return torch.tensor(rewards[index])

    return generate_round, calls


def test_plan_refills_until_full_and_counts_the_cost():
    # Groups of 2; round 0 keeps groups 1 and 3, round 1 keeps 0 and 2.
    generate, calls = rounds_of([1, 1, 0, 1, 0, 0, 1, 0], [0, 1, 1, 1, 1, 0, 0, 0], [0, 1] * 4)
    plan = plan_dynamic_batch(generate, num_groups=4, group_size=2, max_generation_rounds=5)
    assert calls == [0, 1]  # stops as soon as the batch is full
    assert plan.chosen == [(0, 1), (0, 3), (1, 0), (1, 2)]
    assert (plan.rounds, plan.generated, plan.shortfall) == (2, 16, 0)
    assert plan.generations_per_kept_group == 4.0


def test_plan_at_the_cap_fills_with_dropped_groups_and_reports_the_shortfall():
    generate, calls = rounds_of([1, 1, 0, 1, 0, 0, 1, 0], [0, 1] * 4)
    plan = plan_dynamic_batch(generate, num_groups=4, group_size=2, max_generation_rounds=1)
    assert calls == [0]
    assert plan.chosen == [(0, 1), (0, 3), (0, 0), (0, 2)]  # the batch keeps its size
    assert (plan.shortfall, plan.informative_kept, plan.generations_per_kept_group) == (2, 2, 4.0)


def test_plan_keeps_only_the_needed_groups_of_the_last_round():
    generate, _ = rounds_of([0, 1, 1, 1], [0, 1, 1, 0])
    plan = plan_dynamic_batch(generate, num_groups=2, group_size=2, max_generation_rounds=3)
    assert plan.chosen == [(0, 0), (1, 0)]
    # Negative control: a filter that kept equal groups would have stopped after round 0.
    assert plan.rounds == 2


def test_dynamic_sampling_spec_from_config_values():
    assert dynamic_sampling_spec(True) == DynamicSamplingSpec(max_generation_rounds=4)
    assert dynamic_sampling_spec(False) is None and dynamic_sampling_spec(None) is None
    assert dynamic_sampling_spec({"max_generation_rounds": 2}).max_generation_rounds == 2
    with pytest.raises(ValueError, match="max_generation_rounds"):
        dynamic_sampling_spec({"max_generation_rounds": 0})
    with pytest.raises(ValueError, match="rounds"):
        dynamic_sampling_spec({"rounds": 2})


# ---- on the online adapter -----------------------------------------------------------

FLAT, VARIED = "1+1=", "2+2="
GROUP_SIZE = 4


def prompts() -> Dataset:
    return Dataset.from_list([{"prompt": p} for p in (FLAT, VARIED, FLAT, VARIED)])


class HalfFlatReward:
    """Constant 0.5 for the FLAT prompt; 0, 1, 0, 1, ... within a group of the VARIED one. Records each call."""

    __name__ = "half_flat"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        self.calls.append(list(prompts))
        return [0.5 if p == FLAT else float(i % 2) for i, p in enumerate(prompts)]


def make_trainer(tiny_model_dir: str, tmp_path: Any, reward: HalfFlatReward, rounds: int) -> Any:
    return build_trainer(
        "dapo", model=tiny_model_dir, reward_funcs=[reward], train_dataset=prompts(),
        dynamic_sampling={"max_generation_rounds": rounds}, output_dir=str(tmp_path), per_device_train_batch_size=4,
        num_generations=GROUP_SIZE, steps_per_generation=4, max_completion_length=6, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, seed=3,
    )


def first_batch() -> list[dict[str, Any]]:
    return [{"prompt": p} for p in (FLAT, VARIED, FLAT, VARIED) for _ in range(GROUP_SIZE)]


def prompt_texts(trainer: Any, output: dict[str, Any]) -> list[str]:
    return trainer.processing_class.batch_decode(output["prompt_ids"], skip_special_tokens=True)


def test_adapter_drops_equal_groups_refills_to_full_size_and_logs_the_cost(tiny_model_dir, tmp_path):
    reward = HalfFlatReward()
    trainer = make_trainer(tiny_model_dir, tmp_path, reward, rounds=10)
    trainer.model.train()
    output = trainer._generate_and_score_completions(first_batch())

    # Full size: 16 completions, and every kept group is a VARIED one.
    assert output["completion_ids"].shape[0] == 16 == output["advantages"].shape[0]
    texts = prompt_texts(trainer, output)
    assert all(text.strip().endswith(VARIED) for text in texts), texts
    assert output["num_items_in_batch"] == output["completion_mask"].sum()
    assert bool((output["advantages"].abs() > 0).all())

    # The cost: rounds until 4 VARIED groups had been generated, 16 completions each round.
    varied_groups = [sum(p == VARIED for p in call) // GROUP_SIZE for call in reward.calls]
    rounds = len(reward.calls)
    assert rounds >= 2 and varied_groups[0] == 2
    assert sum(varied_groups[:-1]) < 4 <= sum(varied_groups)
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/rounds"] == [float(rounds)]
    assert metrics["dynamic_sampling/generations_per_kept_group"] == [16 * rounds / 4]
    assert metrics["dynamic_sampling/dropped_groups"] == [float(4 * rounds - 4)]
    assert metrics["dynamic_sampling/shortfall_groups"] == [0.0]


def test_adapter_at_the_cap_keeps_the_batch_size_with_zero_advantage_fill(tiny_model_dir, tmp_path):
    reward = HalfFlatReward()
    trainer = make_trainer(tiny_model_dir, tmp_path, reward, rounds=1)
    trainer.model.train()
    output = trainer._generate_and_score_completions(first_batch())
    assert len(reward.calls) == 1
    assert output["completion_ids"].shape[0] == 16
    flat = torch.tensor([text.strip().endswith(FLAT) for text in prompt_texts(trainer, output)])
    assert int(flat.sum()) == 8
    assert bool((output["advantages"][flat] == 0).all()) and bool((output["advantages"][~flat] != 0).all())
    assert trainer._metrics["train"]["dynamic_sampling/shortfall_groups"] == [2.0]
    assert trainer._metrics["train"]["dynamic_sampling/generations_per_kept_group"] == [8.0]


def test_without_dynamic_sampling_equal_groups_stay(tiny_model_dir, tmp_path):
    """Negative control: the same batch without the option keeps the FLAT groups."""
    trainer = build_trainer(
        "dapo", model=tiny_model_dir, reward_funcs=[HalfFlatReward()], train_dataset=prompts(),
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=GROUP_SIZE, steps_per_generation=4,
        max_completion_length=6, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=3,
    )
    trainer.model.train()
    output = trainer._generate_and_score_completions(first_batch())
    assert sum(text.strip().endswith(FLAT) for text in prompt_texts(trainer, output)) == 8
    assert "dynamic_sampling/rounds" not in trainer._metrics["train"]
