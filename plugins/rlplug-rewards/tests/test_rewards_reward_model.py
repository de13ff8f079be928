"""The reward-model path: train a tiny Bradley-Terry reward model, check it ranks held-out pairs, use it in GRPO."""

from __future__ import annotations

import importlib

import pytest
import torch

from rlplug.cli import train_reward_model as train_rm_main
from rlplug.demo.reward_model import arithmetic_pairs, train_tiny_reward_model
from rlplug.demo.arithmetic import split_problems
from rlplug_rewards.reward_model import reward_model

# The package exports the function under the module's name, so fetch the module itself.
reward_model_module = importlib.import_module("rlplug_rewards.reward_model")

TRAIN_STEPS = 120
# 334 held-out pairs: chance is 0.5 with a standard error of 0.027, so 0.6 is 3.7 standard errors above it.
ABOVE_CHANCE = 0.6


def held_out_pairs() -> list[dict[str, str]]:
    """One pair per held-out prompt (prompts never seen in training), with other wrong answers than training's."""
    return arithmetic_pairs(split_problems(seed=0)[1], per_prompt=1, seed=1).to_list()


def pairwise_accuracy(model_dir: str, pairs: list[dict[str, str]]) -> float:
    prompts = [p["prompt"] for p in pairs]
    chosen = reward_model(prompts, [p["chosen"] for p in pairs], model=model_dir, device="cpu")
    rejected = reward_model(prompts, [p["rejected"] for p in pairs], model=model_dir, device="cpu")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    torch.set_num_threads(1)
    reward_model_module.clear_loaded_models()
    return str(train_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"), max_steps=TRAIN_STEPS, seed=0))


def test_training_prompts_and_held_out_prompts_do_not_overlap():
    train, held_out = split_problems(seed=0)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held_out}
    assert all(p["chosen"] != p["rejected"] for p in held_out_pairs())


def test_trained_reward_model_ranks_held_out_pairs_above_chance(trained_rm):
    accuracy = pairwise_accuracy(trained_rm, held_out_pairs())
    assert accuracy > ABOVE_CHANCE, accuracy


def test_negative_control_swapped_labels_rank_below_chance(tmp_path):
    from datasets import Dataset

    swapped = [
        {"prompt": p["prompt"], "chosen": p["rejected"], "rejected": p["chosen"]}
        for p in arithmetic_pairs(split_problems(seed=0)[0], per_prompt=4, seed=0).to_list()
    ]
    model_dir = str(train_tiny_reward_model(tmp_path / "swapped", train_dataset=Dataset.from_list(swapped), max_steps=TRAIN_STEPS))
    assert pairwise_accuracy(model_dir, held_out_pairs()) < 0.5


def test_scores_are_batch_independent_and_the_model_loads_once(trained_rm):
    reward_model_module.clear_loaded_models()
    prompts, completions = ["1+2+3=", "9+9+9=", "0+0+1="], ["6", "27", "13"]
    one_by_one = [reward_model([p], [c], model=trained_rm, device="cpu")[0] for p, c in zip(prompts, completions)]
    batched = reward_model(prompts, completions, model=trained_rm, device="cpu", batch_size=3)
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(reward_model_module._LOADED) == 1


def test_grpo_uses_the_reward_model_by_name(trained_rm, tiny_model_dir, tmp_path):
    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    trainer = build_trainer(
        "grpo", model=tiny_model_dir, reward_funcs=[{"name": "reward_model", "model": trained_rm}],
        train_dataset=train_dataset(), per_device_train_batch_size=16, num_generations=8, max_completion_length=4,
        max_steps=2, bf16=False, learning_rate=1e-3, logging_steps=1, report_to="none", output_dir=str(tmp_path),
        gradient_checkpointing=False, save_strategy="no",
    )
    trainer.train()
    assert trainer.state.global_step == 2
    logged = list(trainer._logs["rewards"]["reward_model"])
    prompts, completions = list(trainer._logs["prompt"]), list(trainer._logs["completion"])
    expected = reward_model(prompts, completions, model=trained_rm, device="cpu")
    assert logged == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 4) for v in logged)) > 1
    assert all("rewards/reward_model/mean" in e for e in trainer.state.log_history[:2])


def test_train_rm_command_entry_point(tmp_path):
    assert train_rm_main(["--output_dir", str(tmp_path / "rm"), "--max_steps", "2", "--logging_steps", "1"]) == 0
    assert reward_model(["1+1+1="], ["3"], model=str(tmp_path / "rm"), device="cpu")[0] == pytest.approx(
        reward_model(["1+1+1="], ["3"], model=str(tmp_path / "rm"), device="cpu", batch_size=1)[0]
    )
    with pytest.raises(SystemExit):
        train_rm_main(["--output_dir", str(tmp_path / "rm2"), "stray"])
