"""Process supervision: per-step rewards from reward functions, and GRPO's group_norm_process estimator."""

from __future__ import annotations

import asyncio
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlplug import Rollout
from rlplug.components.process_rewards import (
    AsyncStepRewardFunction,
    StepRewardFunction,
    collect_step_rewards,
    parse_completion_reward,
    wrap_reward_functions,
)
from rlplug_grpo.advantages import group_norm_process

F64 = torch.float64
NAN = float("nan")


# ---- what a reward function may return ------------------------------------------------


def test_parse_outcome_none_and_empty():
    assert parse_completion_reward(None, 4, "f") == (None, None)
    assert parse_completion_reward(0.5, 4, "f") == (0.5, None)
    assert parse_completion_reward(torch.tensor(2.0), 4, "f") == (2.0, None)
    assert parse_completion_reward([], 4, "f") == (None, None)


def test_parse_pairs_and_per_token_lists():
    assert parse_completion_reward([(0, 1.0), (3, -0.5), (3, 0.25)], 4, "f") == (0.75, {0: 1.0, 3: -0.25})
    assert parse_completion_reward([0.5, 0.0, 2.0], 4, "f") == (2.5, {0: 0.5, 1: 0.0, 2: 2.0})
    assert parse_completion_reward(torch.tensor([1.0, 2.0]), 4, "f") == (3.0, {0: 1.0, 1: 2.0})


@pytest.mark.parametrize(
    "value, message",
    [
        ([(4, 1.0)], "step index 4 is outside the completion's 4 tokens"),
        ([(-1, 1.0)], "step index -1 is outside"),
        ([0.0] * 5, "step index 4 is outside"),
        ([(0, float("nan"))], "not a finite number"),
        ([(1.5, 1.0)], "is not an integer"),
        ("1.0", "expected a float, None, \\(token_index, reward\\) pairs or a per-token list"),
    ],
)
def test_parse_refuses_bad_steps(value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        parse_completion_reward(value, 4, "reward function 'f', completion 0")


def steps_and_outcomes(prompts, completions, completion_ids, **kwargs):
    """Completion 0: steps; 1: an outcome; 2: unscorable; 3: a per-token list."""
    return [[(0, 1.0), (2, 2.0)], 0.5, None, [1.0, -1.0]]


def test_wrapper_hands_trl_one_float_and_keeps_the_steps():
    wrapped = StepRewardFunction(steps_and_outcomes)
    assert wrapped.__name__ == "steps_and_outcomes"
    values = wrapped(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=[[5, 6, 7]] * 4)
    assert values == [3.0, 0.5, None, 0.0]
    assert wrapped.last_steps == [{0: 1.0, 2: 2.0}, None, None, {0: 1.0, 1: -1.0}]


def test_wrap_reward_functions_keeps_names_async_and_models():
    async def async_steps(prompts, completions, completion_ids, **kwargs):
        return [[(1, 2.0)] for _ in completions]

    model = torch.nn.Linear(1, 1)
    partial = functools.partial(steps_and_outcomes)
    wrapped = wrap_reward_functions([partial, async_steps, model, "some/reward-model"])
    assert isinstance(wrapped[0], StepRewardFunction) and wrapped[0].__name__ == "steps_and_outcomes"
    assert isinstance(wrapped[1], AsyncStepRewardFunction) and wrapped[1].__name__ == "async_steps"
    assert wrapped[2] is model and wrapped[3] == "some/reward-model"
    assert asyncio.run(wrapped[1](prompts=["p"], completions=["c"], completion_ids=[[1, 2]])) == [2.0]
    assert wrapped[1].last_steps == [{1: 2.0}]


def test_collect_step_rewards_weights_and_marks_steps():
    first = StepRewardFunction(steps_and_outcomes)
    first(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=[[5, 6, 7]] * 4)
    second = StepRewardFunction(lambda prompts, completions, completion_ids, **kw: [[(2, 1.0)], None, None, 3.0])
    second(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=[[5, 6, 7]] * 4)
    steps = collect_step_rewards([first, second, "model"], torch.tensor([1.0, 0.5, 1.0]), 4, 5, "cpu")
    assert torch.equal(
        steps.token_rewards,
        torch.tensor([[1.0, 0.0, 2.5, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1.0, -1.0, 0, 0, 0]]),
    )
    assert steps.step_mask.tolist() == [[True, False, True, False, False], [False] * 5, [False] * 5, [True, True, False, False, False]]
    assert steps.is_process.tolist() == [[True, True, False], [False, False, False], [False, False, False], [True, False, False]]
    with pytest.raises(ValueError, match="scored 4 completions, expected 3"):
        collect_step_rewards([first], torch.tensor([1.0]), 3, 5, "cpu")


# ---- group_norm_process: exact values ------------------------------------------------


def process_rollout(steps_per_completion, lengths, width, group_size, outcome=None) -> Rollout:
    """Steps as {token: reward} per completion (None = unscorable)."""
    batch = len(steps_per_completion)
    token_rewards = torch.zeros(batch, width, dtype=F64)
    step_mask = torch.zeros(batch, width, dtype=torch.bool)
    rewards = torch.zeros(batch, dtype=F64) if outcome is None else torch.tensor(outcome, dtype=F64)
    for row, steps in enumerate(steps_per_completion):
        if steps is None:
            rewards[row] = NAN
            continue
        for token, reward in steps.items():
            token_rewards[row, token] = reward
            step_mask[row, token] = True
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(width)] for n in lengths], dtype=F64)
    return Rollout(
        rewards=rewards, group_ids=torch.arange(batch) // group_size, completion_mask=mask,
        token_rewards=token_rewards, step_mask=step_mask,
    )


# Two completions, three steps each. Step rewards {4, -2, 2} and {0, 1, 1}: mean 1,
# squared deviations 9 + 9 + 1 + 1 + 0 + 0 = 20, Bessel variance 20 / 5 = 4, std 2.
# Normalized: c1 [1.5, -1.5, 0.5] at tokens 0, 2, 4; c2 [-0.5, 0, 0] at tokens 1, 2, 3.
# A_t = sum of the normalized steps at tokens >= t:
#   c1 (6 tokens): t0 0.5, t1 -1, t2 -1, t3 0.5, t4 0.5, t5 0 (after the last step)
#   c2 (4 tokens, 2 of padding): t0 -0.5, t1 -0.5, t2 0, t3 0, then 0.
HAND_STEPS = [{0: 4.0, 2: -2.0, 4: 2.0}, {1: 0.0, 2: 1.0, 3: 1.0}]
HAND_EXPECTED = torch.tensor([[0.5, -1.0, -1.0, 0.5, 0.5, 0.0], [-0.5, -0.5, 0.0, 0.0, 0.0, 0.0]], dtype=F64)


def check_hand_case(estimator) -> None:
    rollout = process_rollout(HAND_STEPS, lengths=[6, 4], width=6, group_size=2)
    assert torch.equal(estimator(rollout, std_epsilon=0.0), HAND_EXPECTED)


def test_group_norm_process_hand_computed():
    check_hand_case(group_norm_process)
    # With the default epsilon the std is 2 + 1e-4.
    rollout = process_rollout(HAND_STEPS, lengths=[6, 4], width=6, group_size=2)
    torch.testing.assert_close(group_norm_process(rollout), HAND_EXPECTED * 2.0 / (2.0 + 1e-4), rtol=1e-15, atol=0.0)


def prefix_sum_variant(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """A wrong variant: the normalized steps summed over steps <= t instead of >= t."""
    normalized = group_norm_process(rollout, std_epsilon)
    steps = torch.diff(normalized.flip(-1), dim=-1, prepend=torch.zeros_like(normalized[:, :1])).flip(-1)
    return steps.cumsum(-1) * rollout.completion_mask


def per_completion_variant(rollout: Rollout, std_epsilon: float = 1e-4) -> torch.Tensor:
    """A wrong variant: each completion's steps normalized on their own, not over the group."""
    rows = []
    for row in range(rollout.batch_size):
        single = Rollout(
            rewards=rollout.rewards[row : row + 1], group_ids=torch.zeros(1, dtype=torch.long),
            completion_mask=rollout.completion_mask[row : row + 1], token_rewards=rollout.token_rewards[row : row + 1],
            step_mask=rollout.step_mask[row : row + 1],
        )
        rows.append(group_norm_process(single, std_epsilon))
    return torch.cat(rows)


@pytest.mark.parametrize("wrong", [prefix_sum_variant, per_completion_variant], ids=lambda f: f.__name__)
def test_negative_control_wrong_variants_fail_the_hand_case(wrong):
    with pytest.raises(AssertionError):
        check_hand_case(wrong)


def test_unscorable_completions_stay_out_of_the_statistics():
    rollout = process_rollout([*HAND_STEPS, None], lengths=[6, 4, 6], width=6, group_size=3)
    expected = torch.cat([HAND_EXPECTED, torch.zeros(1, 6, dtype=F64)])
    assert torch.equal(group_norm_process(rollout, std_epsilon=0.0), expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.floats(-50, 50, allow_nan=False, width=64), min_size=1, max_size=4), min_size=2, max_size=4),
    st.floats(-1000, 1000, allow_nan=False, width=64),
)
def test_group_norm_process_is_shift_invariant(step_lists, shift):
    width = 4
    steps = [{t: r for t, r in enumerate(rewards)} for rewards in step_lists]
    shifted = [{t: r + shift for t, r in s.items()} for s in steps]
    before = group_norm_process(process_rollout(steps, [width] * len(steps), width, len(steps)))
    after = group_norm_process(process_rollout(shifted, [width] * len(steps), width, len(steps)))
    scale = max(abs(r) for s in step_lists for r in s) + abs(shift) + 1.0
    # Exact in real arithmetic; float64 rounding of the shifted values is divided by std + 1e-4 and
    # summed over up to 4 steps.
    torch.testing.assert_close(after, before, rtol=0.0, atol=64 * torch.finfo(F64).eps * scale * 1e4)


# ---- degenerate groups ----------------------------------------------------------------


def test_group_of_size_one():
    one_step = group_norm_process(process_rollout([{1: 3.0}, {0: -2.0}], [3, 3], 3, group_size=1))
    assert torch.equal(one_step, torch.zeros(2, 3, dtype=F64))
    # One completion's three steps are still normalized among themselves: [1, 2, 3] -> [-1, 0, 1].
    three_steps = group_norm_process(process_rollout([{0: 1.0, 1: 2.0, 2: 3.0}], [3], 3, group_size=1), std_epsilon=0.0)
    assert torch.equal(three_steps, torch.tensor([[0.0, 1.0, 1.0]], dtype=F64))


def test_all_equal_step_rewards_give_zero():
    advantages = group_norm_process(process_rollout([{0: 0.7, 2: 0.7}, {1: 0.7}], [3, 3], 3, group_size=2))
    assert torch.equal(advantages, torch.zeros(2, 3, dtype=F64))


def test_all_unscorable_or_stepless_give_zero():
    advantages = group_norm_process(process_rollout([None, None, {}, {}], [3] * 4, 3, group_size=2))
    assert torch.equal(advantages, torch.zeros(4, 3, dtype=F64))


# ---- refusals -------------------------------------------------------------------------


def test_refuses_a_rollout_without_steps():
    rollout = Rollout(rewards=torch.ones(2), group_ids=torch.zeros(2, dtype=torch.long), completion_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="group_norm_process needs per-step rewards"):
        group_norm_process(rollout)


def test_refuses_outcome_rewards_and_rewards_off_the_steps():
    with pytest.raises(ValueError, match="some completions have an outcome reward"):
        group_norm_process(process_rollout(HAND_STEPS, [6, 4], 6, 2, outcome=[1.0, 0.0]))
    rollout = process_rollout(HAND_STEPS, [6, 4], 6, 2)
    rollout.token_rewards[0, 5] = -0.01  # e.g. KL in the reward
    with pytest.raises(ValueError, match="per-token rewards outside the steps"):
        group_norm_process(rollout)


# ---- through the online adapter -------------------------------------------------------


def odd_token_steps(prompts, completions, completion_ids, **kwargs):
    """A step at every odd completion token: +1 for an even token id, -0.5 for an odd one."""
    return [[(i, 1.0 if token % 2 == 0 else -0.5) for i, token in enumerate(ids) if i % 2 == 1] for ids in completion_ids]


def expected_process_advantages(completion_ids: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """group_norm_process written out with loops, from the reward function's definition."""
    advantages = torch.zeros(completion_ids.shape, dtype=torch.float64)
    for start in range(0, completion_ids.shape[0], group_size):
        steps = {}
        for row in range(start, start + group_size):
            length = int(mask[row].sum())
            for t in range(1, length, 2):
                steps[(row, t)] = 1.0 if int(completion_ids[row, t]) % 2 == 0 else -0.5
        if len(steps) < 2:
            continue
        values = list(steps.values())
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        for (row, t), value in steps.items():
            advantages[row, : t + 1] += (value - mean) / (std + 1e-4)
    return advantages * mask


def test_process_rewards_reach_the_estimator_through_build_trainer(tiny_model_dir):
    from transformers import AutoTokenizer

    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    trainer = build_trainer(
        "grpo", advantage="group_norm_process", model=tiny_model_dir, reward_funcs=[odd_token_steps],
        train_dataset=train_dataset(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        output_dir="rlplug-output/test-process", per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, max_steps=2, learning_rate=1e-3, bf16=False, report_to="none", save_strategy="no",
    )
    generations, rollouts = [], []
    generate, build_rollout = trainer._generate_and_score_completions, trainer._build_rollout

    def recorded_generate(*args, **kwargs):
        output = generate(*args, **kwargs)
        generations.append({k: v.detach().clone() for k, v in output.items() if torch.is_tensor(v)})
        return output

    def recorded_build_rollout(*args, **kwargs):
        rollouts.append(build_rollout(*args, **kwargs))
        return rollouts[-1]

    trainer._generate_and_score_completions, trainer._build_rollout = recorded_generate, recorded_build_rollout
    trainer.train()
    assert len(generations) == 2
    for output, rollout in zip(generations, rollouts):
        ids, mask = output["completion_ids"], output["completion_mask"].double()
        assert output["advantages"].shape == ids.shape
        expected = expected_process_advantages(ids, mask, group_size=4)
        torch.testing.assert_close(output["advantages"].double(), expected, rtol=1e-5, atol=1e-6)
        assert output["advantages"].abs().max() > 0
        # Outcome 0, steps in the per-token rewards; TRL saw (and logged) the sum of the steps.
        scorable = ~torch.isnan(rollout.rewards)
        assert torch.all(rollout.rewards[scorable] == 0)
        torch.testing.assert_close(rollout.sequence_rewards()[scorable], rollout.rewards_per_func[scorable, 0])
    assert "reward" in trainer.state.log_history[0]
