"""Selecting rewards from a config, and the guard that keeps a failing reward from stopping training."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
import torch

from rlplug.core.registry import UnknownComponentError
from rlplug.components.rewards import GuardedReward, RewardConfigError, RewardFunctionError, build_reward_functions


def test_names_weights_and_params_become_trl_reward_funcs_and_weights():
    functions, weights = build_reward_functions(
        [{"name": "accuracy_math", "weight": 1.0}, {"name": "format_think", "weight": 0.2, "think_tag": "reasoning"}]
    )
    assert [f.__name__ for f in functions] == ["accuracy_math", "format_think"]
    assert weights == [1.0, 0.2]
    assert functions[1].params == {"think_tag": "reasoning"}
    assert functions[1]([""], ["<reasoning>a</reasoning><answer>b</answer>"]) == [1.0]

    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in functions] == ["accuracy_math", "format_think"]


def test_weights_default_and_nested_params():
    functions, weights = build_reward_functions(["accuracy_math", "format_think"])
    assert weights is None  # TRL's own default: all 1.0
    _, weights = build_reward_functions(["accuracy_math", {"name": "format_think", "weight": 0.5}])
    assert weights == [1.0, 0.5]
    (nested,), _ = build_reward_functions([{"name": "accuracy_math", "params": {"answer_column": "solution"}}])
    assert nested([""], ["7"], solution=["7"]) == [1.0]


def test_same_reward_twice_needs_log_names():
    entries = [{"name": "length_penalty", "max_completion_length": 8}, {"name": "length_penalty", "max_completion_length": 16}]
    with pytest.raises(RewardConfigError, match="log_name"):
        build_reward_functions(entries)
    entries[1]["log_name"] = "length_penalty_16"
    functions, _ = build_reward_functions(entries)
    assert [f.__name__ for f in functions] == ["length_penalty", "length_penalty_16"]


def test_unknown_name_gets_did_you_mean():
    with pytest.raises(UnknownComponentError, match="Did you mean: accuracy_math"):
        build_reward_functions([{"name": "acuracy_math", "weight": 1.0}])


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"name": "accuracy_math", "anwser_column": "x"}, "does not take param.*anwser_column.*answer_column"),
        ({"name": "overlong_penalty", "max_completion_length": 8}, "needs param 'cache_length'"),
        ({"name": "accuracy_math", "weight": "high"}, "weight"),
        ({"name": "accuracy_math", "answer_tag": "a", "params": {"answer_tag": "b"}}, "both inline and under"),
        ({"weight": 1.0}, "needs a `name`"),
    ],
)
def test_bad_entries_fail_with_a_message_naming_the_problem(entry, message):
    with pytest.raises(RewardConfigError, match=message):
        build_reward_functions([entry])


def flaky_column_reward(prompts, completions, poison, **kwargs):
    """Raises on the whole batch as soon as one row is poisoned; else the completion length."""
    if any(poison):
        raise RuntimeError("poisoned row")
    return [float(len(c)) for c in completions]


def test_guard_makes_raising_samples_unscorable_and_counts_them():
    logged = []
    guarded = GuardedReward(flaky_column_reward, "flaky")
    rewards = guarded(["p"] * 4, ["a", "bb", "ccc", "dddd"], poison=[False, True, False, True],
                      log_metric=lambda name, value: logged.append((name, value)))
    assert rewards == [1.0, None, 3.0, None]
    assert logged == [("rewards/flaky/errors", 2.0), ("rewards/flaky/nonfinite", 0.0)]
    assert guarded.error_count == 2
    # Negative control: unguarded, the same call raises.
    with pytest.raises(RuntimeError):
        flaky_column_reward(["p"] * 4, ["a", "bb", "ccc", "dddd"], poison=[False, True, False, True])


def test_guard_turns_nonfinite_and_non_numbers_into_none():
    logged = {}
    guarded = GuardedReward(lambda prompts, completions, **kw: [1, math.nan, math.inf, "abc", None, torch.tensor(2.5)], "odd")
    rewards = guarded([""] * 6, [""] * 6, log_metric=lambda name, value: logged.__setitem__(name, value))
    assert rewards == [1.0, None, None, None, None, 2.5]
    assert logged == {"rewards/odd/errors": 1.0, "rewards/odd/nonfinite": 2.0}


def test_wrong_length_is_an_error_naming_the_function():
    guarded = GuardedReward(lambda prompts, completions, **kw: [1.0], "short_reward")
    with pytest.raises(RewardFunctionError, match="'short_reward' returned 1 values for 3 completions"):
        guarded([""] * 3, [""] * 3)
    with pytest.raises(RewardFunctionError, match="'scalar' returned float"):
        GuardedReward(lambda prompts, completions, **kw: 1.0, "scalar")([""], [""])


def test_guarded_rewards_pickle():
    (reward,), _ = build_reward_functions([{"name": "format_think", "think_tag": "t"}])
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "format_think" and clone([""], ["<t>a</t><answer>b</answer>"]) == [1.0]


def test_build_trainer_sets_reward_weights_from_entries(tiny_model_dir, tmp_path):
    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    trainer = build_trainer(
        "grpo", model=tiny_model_dir, train_dataset=train_dataset(),
        reward_funcs=[{"name": "accuracy_math", "weight": 1.0}, {"name": "overlong_penalty", "weight": 0.2, "cache_length": 2}],
        per_device_train_batch_size=8, num_generations=4, max_completion_length=4, max_steps=1, bf16=False,
        report_to="none", output_dir=str(tmp_path), gradient_checkpointing=False,
    )
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 0.2])
    guarded = trainer.reward_funcs[1].fn  # the adapter wraps every reward for per-step outputs
    assert guarded.__name__ == "overlong_penalty"
    assert guarded.params == {"max_completion_length": 4, "cache_length": 2}
    with pytest.raises(ValueError, match="reward weights once"):
        build_trainer("grpo", model=tiny_model_dir, train_dataset=train_dataset(), reward_weights=[1.0],
                      reward_funcs=[{"name": "accuracy_math", "weight": 1.0}], bf16=False, output_dir=str(tmp_path))


# ---- a reward that raises on some samples does not stop training ------------------------


def raises_on_even_length(prompts, completions, **kwargs):
    """Length of the completion; raises for completions of even length."""
    if any(len(c) % 2 == 0 for c in completions):
        raise ValueError("even length")
    return [float(len(c)) for c in completions]


def zero_on_even_length(prompts, completions, **kwargs):
    """The wrong handling: 0.0 instead of 'unscorable' for the same samples."""
    return [0.0 if len(c) % 2 == 0 else float(len(c)) for c in completions]


def _run_two_steps(tiny_model_dir, reward, output_dir):
    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    trainer = build_trainer(
        "grpo", model=tiny_model_dir, reward_funcs=[reward], train_dataset=train_dataset(),
        per_device_train_batch_size=16, num_generations=8, max_completion_length=4, max_steps=2, bf16=False,
        learning_rate=1e-3, logging_steps=1, report_to="none", output_dir=str(output_dir), gradient_checkpointing=False, save_strategy="no",
        temperature=1.0, seed=0,
    )
    seen = []
    log_advantages = trainer._log_advantages

    def record(advantages, rollout):
        seen.append((rollout.rewards_per_func[:, 0].clone(), advantages.clone()))
        return log_advantages(advantages, rollout)

    trainer._log_advantages = record
    trainer.train()
    return trainer, seen


def test_a_crashing_reward_does_not_take_down_training(tiny_model_dir, tmp_path):
    trainer, seen = _run_two_steps(tiny_model_dir, raises_on_even_length, tmp_path)
    assert trainer.state.global_step == 2 and len(seen) == 2
    step_logs = [entry for entry in trainer.state.log_history if "rewards/raises_on_even_length/errors" in entry]
    assert len(step_logs) == 2
    errored = scored = 0
    for (rewards, advantages), log in zip(seen, step_logs):
        unscorable = torch.isnan(rewards)
        assert torch.all(advantages[unscorable] == 0.0)
        assert log["rewards/raises_on_even_length/errors"] == float(unscorable.sum())
        errored += int(unscorable.sum())
        scored += int((~unscorable).sum())
    assert errored > 0 and scored > 0
    assert any(torch.any(a[~torch.isnan(r)] != 0) for r, a in seen)  # the scored samples still learn


def test_negative_control_zero_instead_of_unscorable_gives_those_samples_advantages(tiny_model_dir, tmp_path):
    _, seen = _run_two_steps(tiny_model_dir, zero_on_even_length, tmp_path)
    even = [rewards == 0.0 for rewards, _ in seen]
    assert any(torch.any(advantages[mask] != 0.0) for (_, advantages), mask in zip(seen, even))


def test_rewards_are_called_by_keyword_as_trl_does():
    from rlplug.components.rewards import build_reward_functions

    def completions_only(completions, **kwargs):
        return [float(len(c)) for c in completions]

    def positional_prompts_first(completions, prompts, **kwargs):  # order differs from TRL's docs
        return [float(len(p)) for p in prompts]

    functions, _ = build_reward_functions([completions_only, positional_prompts_first])
    assert functions[0](prompts=["ab", "c"], completions=["xyz", ""]) == [3.0, 0.0]
    assert functions[1](prompts=["ab", "c"], completions=["xyz", ""]) == [2.0, 1.0]
