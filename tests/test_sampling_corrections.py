"""Sampling corrections and reward scaling: hand-computed values, properties, and how TRL's
fields select them. Parity with TRL's native trainer is in tests/test_parity_sampling_corrections.py."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from rlplug.components.sampling_correction import off_policy_sequence_mask, sampler_importance_weights
from rlplug.core.algorithm import Algorithm
from rlplug.core.plugins import get_registry
from rlplug.core.resolve import ComponentConfigError
from rlplug.core.rollout import Rollout
from rlplug.trl.reward_scaling import advantage_from_trl_fields
from rlplug.trl.sampling_corrections import apply_sampling_corrections, selected_sampling_corrections
from rlplug_grpo.advantages import gdpo, group_mean_batch_std, group_norm

# ---- off-policy sequence mask --------------------------------------------------------


def test_off_policy_mask_hand_computed():
    logps = torch.full((3, 2), -1.0)
    sampling = torch.tensor([[-0.5, -0.5], [-1.2, float("nan")], [-0.5, -0.5]])
    mask = torch.ones(3, 2)
    advantages = torch.tensor([[-1.0], [-1.0], [2.0]])
    keep, metrics = off_policy_sequence_mask(logps, logps, sampling, advantages, mask, off_policy_mask_threshold=0.3)
    # D = [0.5, (-0.2 + 0) / 2, 0.5]: the first drifted with A < 0 (dropped); the third has A >= 0 (kept).
    assert keep.tolist() == [[0.0], [1.0], [1.0]]
    assert metrics["off_policy_mask/dropped"].tolist() == [[1.0], [0.0], [0.0]]


def test_off_policy_mask_uses_old_logps_without_a_sampler_and_ignores_padding():
    logps = torch.tensor([[-1.0, -1.0, -9.0]])
    old = torch.tensor([[-0.8, -0.8, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    negative = torch.tensor([[-1.0]])
    assert off_policy_sequence_mask(logps, old, None, negative, mask, 0.19)[0].item() == 0.0  # D = 0.2
    assert off_policy_sequence_mask(logps, old, None, negative, mask, 0.21)[0].item() == 1.0
    # Negative control: counting the padded token (D = (0.4 + 9) / 3) would drop it at 0.21 too.
    assert off_policy_sequence_mask(logps, old, None, negative, torch.ones(1, 3), 0.21)[0].item() == 0.0


# ---- sampler importance weights ------------------------------------------------------

# old log-probs 0, sampler log-probs chosen so the token ratios pi_old / pi_sampler are [2, 1.2, 0.25].
OLD = torch.zeros(1, 3)
SAMPLING = torch.tensor([[-math.log(2.0), -math.log(1.2), math.log(4.0)]])
MASK = torch.ones(1, 3)
ADV = torch.ones(1, 1)


@pytest.mark.parametrize(
    ("mode", "clip_max", "expected"),
    [
        ("token_truncate", 1.5, [[1.5, 1.2, 0.5]]),
        ("token_mask", 1.5, [[0.0, 1.2, 0.0]]),
        ("sequence_truncate", 1.5, [[0.6]]),  # 2 * 1.2 * 0.25
        ("sequence_mask", 1.5, [[0.6]]),
        ("sequence_truncate", 0.55, [[0.55]]),
        ("sequence_mask", 0.55, [[0.0]]),
    ],
)
def test_sampler_importance_weights_hand_computed(mode, clip_max, expected):
    weights, _ = sampler_importance_weights(
        OLD, OLD, SAMPLING, ADV, MASK, vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_min=0.5, vllm_importance_sampling_clip_max=clip_max,
    )
    assert torch.allclose(weights, torch.tensor(expected), atol=1e-6, rtol=0), (weights, expected)  # float32 exp/log


def test_sampler_importance_weights_nan_and_padding_count_as_ratio_one():
    sampling = torch.tensor([[float("nan"), -math.log(2.0), 5.0]])
    weights, _ = sampler_importance_weights(
        OLD, OLD, sampling, ADV, torch.tensor([[1.0, 1.0, 0.0]]), vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=10.0,
    )
    assert torch.allclose(weights, torch.tensor([[1.0, 2.0, 1.0]]), atol=1e-6, rtol=0)


def test_sampler_importance_weights_without_sampler_logps_is_one_and_bad_mode_names_the_field():
    weights, _ = sampler_importance_weights(OLD, OLD, None, ADV, MASK)
    assert weights.tolist() == [[1.0]]
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        sampler_importance_weights(OLD, OLD, SAMPLING, ADV, MASK, vllm_importance_sampling_mode="tokens")


# ---- selection by TRL's fields -------------------------------------------------------


def trl_args(**fields):
    defaults = dict(
        off_policy_mask_threshold=None, use_vllm=False, vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode="sequence_mask", vllm_importance_sampling_clip_min=None,
        vllm_importance_sampling_clip_max=3.0, scale_rewards="group", multi_objective_aggregation="sum_then_normalize",
    )
    return SimpleNamespace(**{**defaults, **fields})


def names(corrections):
    return [c.name for c in corrections]


def test_trl_fields_select_the_corrections_and_bind_their_params():
    recipe = Algorithm(name="x", advantage="group_norm", policy_loss="ppo_clip", aggregation="global_token_mean")
    assert names(selected_sampling_corrections(recipe, trl_args())) == []
    # TRL's default vllm_importance_sampling_correction=True does nothing without vLLM, as in TRL.
    chosen = selected_sampling_corrections(recipe, trl_args(off_policy_mask_threshold=0.5, use_vllm=True))
    assert names(chosen) == ["off_policy_sequence_mask", "sampler_importance_weights"]
    assert chosen[0].params == {"off_policy_mask_threshold": 0.5}
    assert chosen[1].params["vllm_importance_sampling_mode"] == "sequence_mask"
    assert names(selected_sampling_corrections(recipe, trl_args(use_vllm=True, vllm_importance_sampling_correction=False))) == []
    # rlplug's own names, with params under the correction's name; listed once even when TRL selects it too.
    own = replace(
        recipe, sampling_corrections=("off_policy_sequence_mask",),
        component_params={"off_policy_sequence_mask": {"off_policy_mask_threshold": 0.1}},
    )
    chosen = selected_sampling_corrections(own, trl_args(off_policy_mask_threshold=0.5))
    assert names(chosen) == ["off_policy_sequence_mask"] and chosen[0].params == {"off_policy_mask_threshold": 0.1}
    with pytest.raises(ComponentConfigError, match="threshold"):
        selected_sampling_corrections(
            replace(own, component_params={"off_policy_sequence_mask": {"threshold": 0.1}}), trl_args()
        )


def test_corrections_multiply_the_per_token_loss():
    recipe = Algorithm(name="x", sampling_corrections=("off_policy_sequence_mask", "sampler_importance_weights"))
    chosen = selected_sampling_corrections(
        recipe, trl_args(off_policy_mask_threshold=0.1, vllm_importance_sampling_mode="token_truncate",
                         vllm_importance_sampling_clip_min=0.5, vllm_importance_sampling_clip_max=1.5),
    )
    per_token_loss = torch.full((2, 3), 2.0)
    advantages = torch.tensor([[-1.0], [1.0]])
    sampling = torch.cat([torch.zeros(1, 3), SAMPLING])  # row 0: D = 0 - (-1) = 1 > 0.1 with A < 0, dropped
    loss, metrics = apply_sampling_corrections(
        chosen, per_token_loss, torch.full((2, 3), -1.0), torch.zeros(2, 3), advantages, torch.ones(2, 3),
        {"sampling_per_token_logps": sampling},
    )
    assert torch.allclose(loss, torch.tensor([[0.0, 0.0, 0.0], [3.0, 2.4, 1.0]]), atol=1e-6, rtol=0)
    assert set(metrics) == {"off_policy_mask/dropped", "sampler_importance/masked"}


# ---- reward scaling ------------------------------------------------------------------


def test_group_mean_batch_std_hand_computed(toy_rollout):
    # rewards [1, 0, 0, 1 | 3, 1, 2, 2]: group means 0.5 and 2; batch std sqrt(7.5 / 7).
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0]) / (math.sqrt(7.5 / 7) + 1e-4)
    advantages = group_mean_batch_std(toy_rollout)
    assert torch.allclose(advantages, expected, atol=1e-6, rtol=0)  # float32 vs float64 reference
    assert not torch.allclose(group_norm(toy_rollout), expected, atol=1e-3)  # negative control: group stds


def test_gdpo_hand_computed_and_not_drowned_by_a_large_reward():
    # One group of two; function 1 on [0, 1], function 2 on a 20x larger scale pointing the other way.
    per_func = torch.tensor([[1.0, 10.0], [0.0, 30.0]])
    weights = torch.tensor([1.0, 0.5])
    rollout = Rollout(
        rewards=(per_func * weights).sum(1), group_ids=torch.zeros(2, dtype=torch.long),
        completion_mask=torch.ones(2, 1), rewards_per_func=per_func, reward_weights=weights,
    )
    z1 = 0.5 / (math.sqrt(0.5) + 1e-4)
    z2 = 10.0 / (math.sqrt(200.0) + 1e-4)
    s = z1 - 0.5 * z2
    expected = torch.tensor([s, -s]) / (math.sqrt(2 * s * s) + 1e-4)
    assert torch.allclose(gdpo(rollout), expected, atol=1e-6, rtol=0)
    assert gdpo(rollout)[0] > 0
    # Negative control: summing first lets the large reward decide the sign.
    assert group_norm(rollout)[0] < 0


def test_gdpo_needs_per_function_rewards(toy_rollout):
    with pytest.raises(ValueError, match="rewards_per_func"):
        gdpo(replace(toy_rollout, rewards_per_func=None))


GROUP_RECIPE = Algorithm(name="grpo", advantage="group_norm")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "group_norm"),
        ({"scale_rewards": "batch"}, "group_mean_batch_std"),
        ({"scale_rewards": "none"}, "group_mean"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "gdpo"),
        ({"multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "batch"}, "gdpo"),  # as in TRL
    ],
)
def test_trl_reward_scaling_fields_select_the_estimator(fields, expected):
    assert advantage_from_trl_fields(GROUP_RECIPE, trl_args(**fields)).advantage == expected
    assert get_registry().get("advantage_estimators", expected)


def test_reward_scaling_contradicting_the_estimator_is_refused():
    rloo = Algorithm(name="rloo", advantage="rloo")
    assert advantage_from_trl_fields(rloo, trl_args()).advantage == "rloo"
    with pytest.raises(ValueError, match="scale_rewards='batch'.*contradicts.*'rloo'"):
        advantage_from_trl_fields(rloo, trl_args(scale_rewards="batch"))


def test_off_policy_mask_without_a_threshold_names_the_field():
    recipe = Algorithm(name="x", sampling_corrections=("off_policy_sequence_mask",))
    (mask,) = selected_sampling_corrections(recipe, trl_args())
    with pytest.raises(ValueError, match="off_policy_mask_threshold"):
        mask(OLD, OLD, None, ADV, MASK)
