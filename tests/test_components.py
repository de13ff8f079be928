"""Exact values for the built-in components and the rlplug-grpo estimators and losses."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlplug import AggregationContext, Rollout, get_registry


def component(kind, name):
    return get_registry().get(kind, name)


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    "name, ctx, expected",
    [
        # ((1+2)/2 + (4+5+6)/3) / 2 = (1.5 + 5) / 2, then / GA=2
        ("sequence_mean_token_mean", AggregationContext(gradient_accumulation_steps=2), 3.25 / 2),
        # (1+2+4+5+6) / 5 tokens, / GA=2
        ("local_token_mean", AggregationContext(gradient_accumulation_steps=2), 3.6 / 2),
        # 18 / (B=2 * L_max=4), / GA=2
        ("constant_normalizer", AggregationContext(gradient_accumulation_steps=2, max_completion_length=4), 18 / 8 / 2),
        # 18 / (N=20 / 2 processes * GA 2 / steps_per_generation 4) = 18 / 5
        (
            "global_token_mean",
            AggregationContext(gradient_accumulation_steps=2, num_items_in_batch=torch.tensor(20.0), num_processes=2,
                               steps_per_generation=4),
            18 / 5,
        ),
        # in eval: no accumulation, 18 / (20 / 2)
        (
            "global_token_mean",
            AggregationContext(num_items_in_batch=torch.tensor(20.0), num_processes=2, steps_per_generation=4,
                               training=False),
            1.8,
        ),
    ],
)
def test_aggregations_exact(name, ctx, expected):
    assert component("loss_aggregations", name)(LOSS, MASK, ctx).item() == pytest.approx(expected, rel=1e-7)


def test_aggregations_differ_so_a_wrong_one_is_visible():
    ctx = AggregationContext(max_completion_length=3, num_items_in_batch=torch.tensor(10.0))
    # On a per-token loss and on a per-sequence loss (B, 1): sequence_mean and sequence_sum_mean
    # agree on the first and differ on the second (LUSPO weights a sequence loss by its length).
    values = {name: tuple(component("loss_aggregations", name)(loss, MASK, ctx).item() for loss in (LOSS, LOSS[:, :1]))
              for name in get_registry().names("loss_aggregations")}
    assert len(set(values.values())) == len(values), values


def test_kl_estimators_exact():
    logps = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # pi/ref = 2: k1 = log 2, k2 = (log 2)^2 / 2, k3 = 1/2 - 1 + log 2
    assert component("kl_estimators", "k1")(logps, ref).item() == pytest.approx(math.log(2))
    assert component("kl_estimators", "k2")(logps, ref).item() == pytest.approx(math.log(2) ** 2 / 2)
    assert component("kl_estimators", "k3")(logps, ref).item() == pytest.approx(-0.5 + math.log(2))
    zero = component("kl_estimators", "k3")(ref, ref)
    assert zero.item() == 0.0


def rollout(rewards, group_size):
    rewards = torch.tensor(rewards, dtype=torch.float32)
    return Rollout(rewards=rewards, group_ids=torch.arange(len(rewards)) // group_size,
                   completion_mask=torch.ones(len(rewards), 2))


def test_group_norm_exact():
    advantages = component("advantage_estimators", "group_norm")(rollout([1.0, 0.0, 0.0, 1.0, 2.0, 4.0], 3))
    std_first = math.sqrt(1 / 3)  # rewards 1,0,0: mean 1/3, sample variance 1/3
    std_second = math.sqrt(7 / 3)  # rewards 1,2,4: mean 7/3, sample variance 7/3
    expected = [
        (1 - 1 / 3) / (std_first + 1e-4), (-1 / 3) / (std_first + 1e-4), (-1 / 3) / (std_first + 1e-4),
        (1 - 7 / 3) / (std_second + 1e-4), (2 - 7 / 3) / (std_second + 1e-4), (4 - 7 / 3) / (std_second + 1e-4),
    ]
    assert advantages.tolist() == pytest.approx(expected, rel=1e-6)


def test_group_mean_exact_and_nan_is_left_out():
    advantages = component("advantage_estimators", "group_mean")(rollout([1.0, float("nan"), 0.0, 2.0], 4))
    assert advantages.tolist() == pytest.approx([0.0, 0.0, -1.0, 1.0])


def test_groups_need_not_be_contiguous():
    rewards = torch.tensor([1.0, 10.0, 3.0, 20.0])
    interleaved = Rollout(rewards=rewards, group_ids=torch.tensor([0, 1, 0, 1]), completion_mask=torch.ones(4, 1))
    advantages = component("advantage_estimators", "group_mean")(interleaved)
    assert advantages.tolist() == [-1.0, -5.0, 1.0, 5.0]


def test_unequal_groups_are_refused():
    bad = Rollout(rewards=torch.zeros(3), group_ids=torch.tensor([0, 0, 1]), completion_mask=torch.ones(3, 1))
    with pytest.raises(ValueError, match="equal size"):
        component("advantage_estimators", "group_norm")(bad)


@settings(max_examples=50, deadline=None)
@given(
    rewards=st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8),
    shift=st.floats(-3, 3, allow_nan=False),
)
def test_group_estimators_ignore_a_constant_shift(rewards, shift):
    for name in ("group_norm", "group_mean"):
        base = component("advantage_estimators", name)(rollout(rewards, 4))
        shifted = component("advantage_estimators", name)(rollout([r + shift for r in rewards], 4))
        assert torch.allclose(base, shifted, atol=2e-3 if name == "group_norm" else 1e-4)


def test_token_rewards_are_summed_into_outcomes():
    r = Rollout(rewards=torch.tensor([1.0, 1.0]), group_ids=torch.tensor([0, 0]),
                completion_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
                token_rewards=torch.tensor([[-0.5, -0.25], [-1.0, -7.0]]))
    assert r.sequence_rewards().tolist() == [0.25, 0.0]  # the masked -7 is ignored
    assert component("advantage_estimators", "group_mean")(r).tolist() == [0.125, -0.125]


def test_ppo_clip_exact():
    ppo_clip = component("policy_losses", "ppo_clip")
    old = torch.zeros(1, 3)
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    loss, metrics = ppo_clip(logps, old, advantages, torch.ones(1, 3), epsilon=0.2, epsilon_high=0.28)
    # ratio 1.5, A>0: clipped to 1.28; ratio 0.5, A<0: min(-0.5, -0.8) = -0.8; ratio 1.1 inside: 2.2
    assert loss.tolist()[0] == pytest.approx([-1.28, 0.8, -2.2], rel=1e-6)
    assert metrics["clip_ratio/high_mean"].tolist() == [[1.0, 0.0, 0.0]]
    assert metrics["clip_ratio/low_mean"].tolist() == [[0.0, 1.0, 0.0]]
    symmetric, _ = ppo_clip(logps, old, advantages, torch.ones(1, 3), epsilon=0.2, epsilon_high=None)
    assert symmetric[0, 0].item() == pytest.approx(-1.2)


def test_gspo_uses_the_length_normalized_sequence_ratio():
    gspo = component("policy_losses", "gspo_clip")
    logps = torch.tensor([[0.1, 0.3, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, _ = gspo(logps, torch.zeros(1, 3), torch.tensor([[1.0]]), mask, epsilon=0.5, epsilon_high=0.5)
    assert loss.shape == (1, 1)
    assert loss.item() == pytest.approx(-math.exp(0.2), rel=1e-6)  # masked token ignored, mean log-ratio 0.2


def test_cispo_caps_the_weight_but_keeps_the_gradient():
    cispo = component("policy_losses", "cispo")
    logps = torch.log(torch.tensor([[3.0, 0.5]])).requires_grad_()
    loss, metrics = cispo(logps, torch.zeros(1, 2), torch.tensor([[1.0]]), torch.ones(1, 2), epsilon_high=2.0)
    loss.sum().backward()
    assert logps.grad.tolist() == [[-2.0, -0.5]]  # -sg(min(ratio, 2)) * A
    assert metrics["cispo_clip_ratio"].tolist() == [[1.0, 0.0]]
