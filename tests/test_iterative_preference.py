"""Online / iterative DPO and Curry-DPO (rlplug/trl/iterative.py) on the tiny model: rounds,
the reference refreshed to the previous round's policy, curriculum stages, any preference loss."""

from __future__ import annotations

import math

import pytest
from datasets import Dataset
from peft import LoraConfig

import rlplug.trl.iterative as rlplug_iterative
from rlplug import build_trainer


def length_reward(prompts, completions, **kwargs):
    """Longer completions score higher: distinct scores, so every prompt makes a pair."""
    return [float(len(c)) for c in completions]


PROMPTS = Dataset.from_list([{"prompt": f"{a}+{b}+1=", "answer": str(a + b + 1)} for a in range(1, 5) for b in range(1, 3)])


def fields(tmp_path, **extra):
    return {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 4, "bf16": False, "gradient_checkpointing": False,
        "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1, "use_cpu": True,
        "learning_rate": 5e-2, "num_generations": 4, "max_completion_length": 3, "max_length": 12, "beta": 0.5,
        "max_steps": 2, "rounds": 2, **extra,
    }


def lora():
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def losses_by_round(trainer):
    return {entry["round"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_reference_is_refreshed_to_the_previous_rounds_policy(tiny_model_dir, tmp_path, peft):
    trainer = build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                            peft_config=lora() if peft else None, **fields(tmp_path))
    trainer.train()
    losses = losses_by_round(trainer)
    assert trainer.state.global_step == 2 and len(trainer.round_sizes) == 2 and min(trainer.round_sizes) > 0
    # Each round's first step starts with policy == reference: every log-ratio is 0, the DPO loss log 2.
    assert losses[1] == pytest.approx(math.log(2), abs=1e-6)
    assert losses[2] == pytest.approx(math.log(2), abs=1e-6)


def test_without_refresh_the_reference_stays_the_starting_policy(tiny_model_dir, tmp_path):
    # Negative control for the test above: round 2 compares against the untrained reference.
    trainer = build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                            peft_config=lora(), **fields(tmp_path, refresh_reference=False))
    trainer.train()
    losses = losses_by_round(trainer)
    assert losses[1] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(losses[2] - math.log(2)) > 1e-3


def test_curriculum_trains_stages_from_large_to_small_rank_gap(tiny_model_dir, tmp_path, monkeypatch):
    trainer = build_trainer("curry_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                            peft_config=lora(), **fields(tmp_path))
    import rlplug.trl.iterative as iterative

    stages_seen = []
    original = iterative.curriculum_stages
    monkeypatch.setattr(iterative, "curriculum_stages",
                        lambda pairs, n: stages_seen.append(original(pairs, n)) or stages_seen[-1])
    sampled = []
    sample = iterative.sample_completions
    monkeypatch.setattr(iterative, "sample_completions", lambda *a, **k: sampled.append(1) or sample(*a, **k))
    trainer.train()
    (stages,) = stages_seen
    assert len(sampled) == 1  # Curry-DPO samples once, from the starting policy
    assert trainer.round_sizes == [len(stage) for stage in stages]
    assert min(p.gap for p in stages[0]) >= max(p.gap for p in stages[1])
    assert losses_by_round(trainer)[2] == pytest.approx(math.log(2), abs=1e-6)


def test_any_preference_loss_and_label_rewards(tiny_model_dir, tmp_path):
    trainer = build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                            peft_config=lora(), preference_loss="ipo", **fields(tmp_path, max_steps=1, rounds=1))
    trainer.train()
    # IPO at zero log-ratios: (0 - 1/(2 beta))^2 = 1.
    assert losses_by_round(trainer)[1] == pytest.approx(1.0, abs=1e-6)
    assert trainer.components.loss.name == "ipo"
    ranked = build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                           peft_config=lora(), **fields(tmp_path, label_rewards=["arithmetic_distance"]))
    # The task's rewards stay what rlplug train evaluates with; samples are ranked by the label rewards.
    assert [repr(f) for f in ranked.reward_funcs] == ["GuardedReward('length_reward', params={})"]
    scores = rlplug_iterative.score_completions(ranked.label_funcs, ranked.label_weights, [{"prompt": "1+1+1=",
                                                "answer": "3"}], [["3", "5", "x"]])
    assert scores == [[0.0, -2.0, -100.0]]
    # Negative control: the task's own reward ranks the same samples by length.
    assert rlplug_iterative.score_completions(ranked.reward_funcs, [1.0], [{"prompt": "p", "answer": "3"}],
                                              [["3", "55"]]) == [[1.0, 2.0]]


def test_bad_input_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="max_steps must be set"):
        build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                      **fields(tmp_path, max_steps=-1))
    with pytest.warns(UserWarning, match=r"max_steps \(1\) < rounds \(2\): running 1 round"):
        fewer = build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                              **fields(tmp_path, max_steps=1))
    assert fewer.args.rounds == 1
    with pytest.raises(ValueError, match="pairing must be one of best_worst, best_vs_frequent, curriculum"):
        build_trainer("online_dpo", model=tiny_model_dir, reward_funcs=[length_reward], train_dataset=PROMPTS,
                      **fields(tmp_path, pairing="random"))
    with pytest.raises(ValueError, match="at least one reward"):
        build_trainer("online_dpo", model=tiny_model_dir, train_dataset=PROMPTS, **fields(tmp_path))


def test_recipes_on_the_embedded_default_rank_by_distance_and_score_by_exact_match():
    from rlplug import get_registry
    from rlplug.demo import BUILTIN_TASK
    from rlplug.trl.build import trainer_kind_of

    registry = get_registry()
    for name, pairing in (("online_dpo", "best_vs_frequent"), ("curry_dpo", "curriculum")):
        recipe = registry.get("algorithms", name)
        kind = trainer_kind_of(recipe)
        assert kind.name == "iterative_preference" and recipe.config_defaults["pairing"] == pairing
        embedded = BUILTIN_TASK.trainer_fields(recipe, kind, {}, False)
        assert embedded["label_rewards"] == ["arithmetic_distance"] and embedded["max_steps"] == 300
        # A user's own value wins over the embedded one (negative control for the line above).
        assert "label_rewards" not in BUILTIN_TASK.trainer_fields(recipe, kind, {"label_rewards": ["x"]}, False)
    assert BUILTIN_TASK.rewards == ("arithmetic_exact_match",)  # held-out scoring stays exact match
