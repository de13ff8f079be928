"""rlplug-reinforce: REINFORCE, REINFORCE with a baseline, REINFORCE++ and the plain policy-gradient loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rlplug import Rollout
from rlplug_reinforce.advantages import reinforce, reinforce_baseline, reinforce_pp, reinforce_pp_baseline
from rlplug_reinforce.losses import policy_gradient

F64 = torch.float64
NAN = float("nan")


def rollout(rewards, group_size, mask=None, token_rewards=None) -> Rollout:
    rewards = torch.tensor(rewards, dtype=F64)
    if mask is None:
        mask = torch.ones(len(rewards), 2, dtype=F64)
    mask = torch.as_tensor(mask, dtype=F64)
    token_rewards = None if token_rewards is None else torch.as_tensor(token_rewards, dtype=F64)
    return Rollout(
        rewards=rewards, group_ids=torch.arange(len(rewards)) // group_size, completion_mask=mask,
        token_rewards=token_rewards,
    )


# ---- exact values ---------------------------------------------------------------------


def test_reinforce_is_the_raw_sequence_return():
    # Outcome + masked token rewards: 1 + (0.5 - 0.25) = 1.25; NaN -> 0; 3 + (-1) = 2 (padding ignored).
    r = rollout(
        [1.0, NAN, 3.0], 3, mask=[[1, 1], [1, 1], [1, 0]], token_rewards=[[0.5, -0.25], [1.0, 1.0], [-1.0, 9.0]]
    )
    assert torch.equal(reinforce(r), torch.tensor([1.25, 0.0, 2.0], dtype=F64))


def test_reinforce_baseline_subtracts_the_group_mean():
    # Groups [1, 3] (mean 2) and [2, NaN] (mean over the scorable one: 2).
    assert torch.equal(reinforce_baseline(rollout([1.0, 3.0, 2.0, NAN], 2)), torch.tensor([-1.0, 1.0, 0.0, 0.0], dtype=F64))


def test_reinforce_pp_hand_computed():
    # Per-token rewards r = token reward + outcome at the last token:
    #   c1: [0, -1 + 3] = [0, 2] -> returns [2, 2];  c2: [1, 0 - 1] = [1, -1] -> returns [0, -1].
    # Over the 4 tokens: mean 0.75, Bessel variance 6.75 / 3 = 2.25, std 1.5.
    r = rollout([3.0, -1.0], 2, token_rewards=[[0.0, -1.0], [1.0, 0.0]])
    expected = torch.tensor([[1.25, 1.25], [-0.75, -1.75]], dtype=F64) / 1.5
    torch.testing.assert_close(reinforce_pp(r, variance_epsilon=0.0), expected, rtol=1e-15, atol=0.0)


def test_reinforce_pp_discounts_and_skips_padding_and_unscorable():
    # gamma 0.5. c1 (3 tokens): r = [1, 0, 2] -> returns [1 + 0.5 * 1, 0 + 0.5 * 2, 2] = [1.5, 1, 2].
    # c2 (2 tokens, last is padding): r = [4] at its last real token -> [4]. c3 is unscorable: 0.
    # Tokens {1.5, 1, 2, 4}: mean 2.125, squared deviations 0.390625 + 1.265625 + 0.015625 + 3.515625 = 5.1875.
    r = rollout([2.0, 4.0, NAN], 3, mask=[[1, 1, 1], [1, 0, 0], [1, 1, 1]], token_rewards=[[1.0, 0.0, 0.0]] * 3)
    r.token_rewards[1] = 0.0
    advantages = reinforce_pp(r, gamma=0.5, variance_epsilon=0.0)
    std = math.sqrt(5.1875 / 3)
    expected = torch.tensor([[1.5, 1.0, 2.0], [4.0, 2.125, 2.125], [2.125] * 3], dtype=F64) - 2.125
    expected = expected / std * torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=F64)
    torch.testing.assert_close(advantages, expected, rtol=1e-14, atol=0.0)


def test_reinforce_pp_baseline_hand_computed():
    # One group, outcomes [3, 1] -> centered [1, -1], no token rewards -> returns [[1, 1], [-1, -1]];
    # mean 0, Bessel variance 4 / 3.
    advantages = reinforce_pp_baseline(rollout([3.0, 1.0], 2), variance_epsilon=0.0)
    expected = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=F64) / math.sqrt(4.0 / 3.0)
    torch.testing.assert_close(advantages, expected, rtol=1e-15, atol=0.0)


def test_reinforce_pp_baseline_keeps_the_kl_out_of_the_group_mean():
    # Outcomes [3, 1] (group mean 2) and token rewards (KL) [[0, -1], [0, 0]]:
    # per-token rewards c1 [0, -1 + 1] -> returns [0, 0]; c2 [0, -1] -> returns [-1, -1]. Mean -0.5, var 1/3.
    r = rollout([3.0, 1.0], 2, token_rewards=[[0.0, -1.0], [0.0, 0.0]])
    expected = torch.tensor([[0.5, 0.5], [-0.5, -0.5]], dtype=F64) / math.sqrt(1.0 / 3.0)
    torch.testing.assert_close(reinforce_pp_baseline(r, variance_epsilon=0.0), expected, rtol=1e-15, atol=0.0)


def outcome_broadcast_whitened(r: Rollout, variance_epsilon: float = 0.0) -> torch.Tensor:
    """A wrong REINFORCE++: the sequence reward on every token (no return-to-go), then whitened."""
    values = r.sequence_rewards().unsqueeze(1).expand_as(r.completion_mask)
    mask = r.completion_mask
    mean = (values * mask).sum() / mask.sum()
    variance = (((values - mean) * mask) ** 2).sum() / (mask.sum() - 1)
    return (values - mean) / torch.sqrt(variance + variance_epsilon) * mask


def test_negative_control_without_returns_to_go_fails_the_hand_case():
    r = rollout([3.0, -1.0], 2, token_rewards=[[0.0, -1.0], [1.0, 0.0]])
    expected = torch.tensor([[1.25, 1.25], [-0.75, -1.75]], dtype=F64) / 1.5
    torch.testing.assert_close(reinforce_pp(r, variance_epsilon=0.0), expected, rtol=1e-15, atol=0.0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(outcome_broadcast_whitened(r), expected, rtol=1e-6, atol=1e-6)


def test_policy_gradient_hand_computed():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=F64, requires_grad=True)
    advantages = torch.tensor([[2.0], [-1.0]], dtype=F64)
    loss, metrics = policy_gradient(logps, logps.detach() - 5.0, advantages, torch.ones(2, 2, dtype=F64))
    assert torch.equal(loss, torch.tensor([[2.0, 4.0], [-0.5, -3.0]], dtype=F64)) and metrics == {}
    loss.sum().backward()
    assert torch.equal(logps.grad, torch.tensor([[-2.0, -2.0], [1.0, 1.0]], dtype=F64))


def test_policy_gradient_equals_ppo_clip_gradient_on_policy():
    """On-policy (old = sg(logps)) the ratio is 1, so PPO's clipped surrogate has REINFORCE's gradient."""
    from rlplug_grpo.losses import ppo_clip

    torch.manual_seed(0)
    logits = torch.randn(3, 4, dtype=F64, requires_grad=True)
    advantages, mask = torch.randn(3, 4, dtype=F64), torch.ones(3, 4, dtype=F64)
    grads = []
    for loss_fn in (policy_gradient, ppo_clip):
        logps = torch.nn.functional.logsigmoid(logits)
        (loss_fn(logps, logps.detach(), advantages, mask)[0] * mask).sum().backward()
        grads.append(logits.grad.clone())
        logits.grad = None
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-15, atol=0.0)


# ---- properties -----------------------------------------------------------------------

reward_values = st.floats(-50, 50, allow_nan=False, width=64)
FLOAT64_EPS = torch.finfo(F64).eps


@st.composite
def token_batches(draw):
    """A batch of 1-4 groups of 1-4 completions, up to 5 tokens, random masks and per-token rewards."""
    size, groups, width = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    batch = size * groups
    rewards = draw(st.lists(reward_values, min_size=batch, max_size=batch))
    lengths = draw(st.lists(st.integers(1, width), min_size=batch, max_size=batch))
    token_rewards = draw(st.lists(st.lists(reward_values, min_size=width, max_size=width), min_size=batch, max_size=batch))
    mask = [[1.0 if t < n else 0.0 for t in range(width)] for n in lengths]
    return rollout(rewards, size, mask=mask, token_rewards=token_rewards)


@settings(max_examples=80, deadline=None)
@given(token_batches(), st.sampled_from([reinforce_pp, reinforce_pp_baseline]))
def test_reinforce_pp_is_whitened_over_the_masked_tokens(r, estimator):
    advantages = estimator(r)
    mask = r.completion_mask.bool()
    values = advantages[mask]
    assert torch.all(advantages[~mask] == 0)
    assume(values.numel() > 1)
    # With returns of variance v the result has variance v / (v + 1e-8) <= 1; skip the
    # near-degenerate batches (v < ~1e-6) where float64 rounding of the deviations shows.
    variance = values.var(unbiased=True).item()
    assert variance <= 1.0 + 1e-12
    assume(variance > 0.99)
    assert abs(values.mean().item()) <= 1e-9
    raw = estimator(r, variance_epsilon=0.0)[mask]
    assert abs(raw.mean().item()) <= 1e-9 and abs(raw.var(unbiased=True).item() - 1.0) <= 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(reward_values, min_size=2, max_size=6), st.floats(-1000, 1000, allow_nan=False, width=64))
def test_shift_invariance_of_baseline_estimators(rewards, shift):
    before = rollout(rewards, len(rewards))
    after = rollout([x + shift for x in rewards], len(rewards))
    scale = max(abs(x) for x in rewards) + abs(shift) + 1.0
    torch.testing.assert_close(
        reinforce_baseline(after), reinforce_baseline(before), rtol=0.0, atol=16 * FLOAT64_EPS * len(rewards) * scale
    )
    centered = reinforce_baseline(before)
    # Whitening divides by the spread of the centered rewards: rounding of the shift grows by 1/std.
    std = centered.std().item()
    assume(std > 1e-6)
    torch.testing.assert_close(
        reinforce_pp_baseline(after), reinforce_pp_baseline(before), rtol=0.0,
        atol=16 * FLOAT64_EPS * len(rewards) * scale / std,
    )


def test_negative_control_raw_reinforce_is_not_shift_invariant():
    assert not torch.equal(reinforce(rollout([1.0, 2.0], 2)), reinforce(rollout([11.0, 12.0], 2)))


# ---- degenerate groups ----------------------------------------------------------------

ESTIMATORS = [reinforce, reinforce_baseline, reinforce_pp, reinforce_pp_baseline]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda f: f.__name__)
def test_group_of_size_one(estimator):
    advantages = estimator(rollout([2.0, 5.0, 5.0], 1))
    assert torch.isfinite(advantages).all()
    if estimator is reinforce:
        assert torch.equal(advantages, torch.tensor([2.0, 5.0, 5.0], dtype=F64))
    if estimator in (reinforce_baseline, reinforce_pp_baseline):  # each completion is its own baseline
        assert torch.equal(advantages, torch.zeros_like(advantages))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.7, 0.1, -7.3])
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda f: f.__name__)
def test_all_equal_rewards(estimator, value):
    advantages = estimator(rollout([value] * 5, 5))
    assert torch.isfinite(advantages).all()
    if estimator is reinforce:  # the raw return is the signal
        assert torch.equal(advantages, torch.full((5,), value, dtype=F64))
    else:
        # The float64 mean of equal values can be off by an ulp; the whitening divides that
        # residue by sqrt(var + 1e-8) >= 1e-4, so at most ~1e4 ulp of |value| remains.
        assert advantages.abs().max() <= 1e4 * FLOAT64_EPS * abs(value)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda f: f.__name__)
def test_all_nan_rewards(estimator):
    advantages = estimator(rollout([NAN] * 4, 2, token_rewards=torch.ones(4, 2)))
    assert torch.equal(advantages, torch.zeros_like(advantages))


def test_reinforce_pp_single_token_batch_gives_zero():
    advantages = reinforce_pp(rollout([3.0], 1, mask=[[1.0, 0.0]]))
    assert torch.equal(advantages, torch.zeros(1, 2, dtype=F64))


# ---- training through build_trainer ---------------------------------------------------


def test_reinforce_pp_trains_through_build_trainer(tiny_model_dir):
    """Three steps of `reinforce_pp`: (B, T) advantages, whitened over each generation batch's tokens."""
    from transformers import AutoTokenizer

    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    def length_reward(prompts, completions, **kwargs):
        return [0.25 * len(c) for c in completions]

    trainer = build_trainer(
        "reinforce_pp", model=tiny_model_dir, reward_funcs=["arithmetic_exact_match", length_reward],
        train_dataset=train_dataset(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        output_dir="rlplug-output/test-reinforce-pp", per_device_train_batch_size=8, num_generations=4,
        max_completion_length=4, max_steps=3, learning_rate=1e-2, bf16=False, report_to="none", save_strategy="no",
    )
    assert trainer.args.beta == 0.01 and trainer.components.policy_loss.name == "policy_gradient"
    generations, losses = [], []
    generate, training_step = trainer._generate_and_score_completions, trainer.training_step

    def recorded_generate(*args, **kwargs):
        output = generate(*args, **kwargs)
        generations.append({k: v.detach().clone() for k, v in output.items() if torch.is_tensor(v)})
        return output

    def recorded_training_step(*args, **kwargs):
        loss = training_step(*args, **kwargs)
        losses.append(loss.detach())
        return loss

    trainer._generate_and_score_completions, trainer.training_step = recorded_generate, recorded_training_step
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert len(generations) == 3 and all(torch.isfinite(loss) for loss in losses)
    for output in generations:
        advantages, mask = output["advantages"], output["completion_mask"].bool()
        assert advantages.shape == output["completion_ids"].shape
        values = advantages[mask]
        assert abs(values.mean().item()) <= 1e-5 and abs(values.std().item() - 1.0) <= 1e-4
        assert torch.all(advantages[~mask] == 0)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert "kl" in trainer.state.log_history[0]
