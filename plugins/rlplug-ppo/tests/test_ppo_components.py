"""rlplug-ppo's pure components: per-token rewards, GAE against a plain recursion, the six
clipping cases of PPO's ratio clip (seed 000 §6), the value-clip cases, and the other value losses."""

from __future__ import annotations

import pytest
import torch

from rlplug import Rollout, get_registry
from rlplug_ppo.gae import gae, per_token_rewards
from rlplug_ppo.policy_losses import unclipped_pg
from rlplug_ppo.value_losses import clipped_value, huber_value, mse_value


def random_rollout(seed: int, batch: int = 7, length: int = 9, token_rewards: bool = True) -> Rollout:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    lengths[0] = length  # one full row
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    rewards = torch.randn(batch, generator=generator, dtype=torch.float64)
    values = torch.randn(batch, length, generator=generator, dtype=torch.float64)
    kl = -0.05 * torch.rand(batch, length, generator=generator, dtype=torch.float64) * mask if token_rewards else None
    return Rollout(rewards=rewards, group_ids=torch.arange(batch), completion_mask=mask, token_rewards=kl, values=values)


def plain_gae(rollout: Rollout, gamma: float, lam: float) -> torch.Tensor:
    """The textbook recursion, one sequence and one token at a time, in Python floats."""
    out = torch.zeros_like(rollout.values)
    for i in range(rollout.batch_size):
        n = int(rollout.completion_mask[i].sum())
        r = [0.0 if rollout.token_rewards is None else float(rollout.token_rewards[i, t]) for t in range(n)]
        if n:
            r[n - 1] += float(rollout.rewards[i])
        v = [float(rollout.values[i, t]) for t in range(n)] + [0.0]
        running = 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * v[t + 1] - v[t]
            running = delta + gamma * lam * running
            out[i, t] = running
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.7), (0.99, 1.0), (0.8, 0.0)])
def test_gae_equals_the_backward_recursion(seed, gamma, lam):
    rollout = random_rollout(seed)
    expected = plain_gae(rollout, gamma, lam)
    assert torch.allclose(gae(rollout, gamma=gamma, lam=lam), expected, rtol=0, atol=1e-12)


def test_gae_negative_control_catches_a_missing_terminal_zero():
    rollout = random_rollout(3)
    # A wrong variant that bootstraps from the padding's value after the last token.
    wrong = Rollout(rewards=rollout.rewards, group_ids=rollout.group_ids,
                    completion_mask=torch.ones_like(rollout.completion_mask),
                    token_rewards=rollout.token_rewards, values=rollout.values)
    expected = plain_gae(rollout, 1.0, 0.95)
    assert not torch.allclose(gae(wrong, gamma=1.0, lam=0.95) * rollout.completion_mask, expected, atol=1e-6)
    assert not torch.allclose(plain_gae(rollout, 1.0, 0.9), expected, atol=1e-6)  # lam matters


def test_gae_lambda_zero_is_td0_and_lambda_one_is_monte_carlo():
    rollout = random_rollout(11)
    mask = rollout.completion_mask.double()
    rewards = per_token_rewards(rollout)
    values = rollout.values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    gamma = 0.9
    td0 = (rewards + gamma * next_values - values) * mask
    assert torch.allclose(gae(rollout, gamma=gamma, lam=0.0), td0, rtol=0, atol=1e-12)
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rollout.batch_size, dtype=torch.float64)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    monte_carlo = (returns - values) * mask
    assert torch.allclose(gae(rollout, gamma=gamma, lam=1.0), monte_carlo, rtol=0, atol=1e-12)
    assert not torch.allclose(gae(rollout, gamma=gamma, lam=0.5), monte_carlo, atol=1e-6)  # negative control


def test_per_token_rewards_hand_computed():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    kl = torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0.0, 0.0]], dtype=torch.float64)
    rollout = Rollout(rewards=torch.tensor([1.0, 2.0], dtype=torch.float64), group_ids=torch.arange(2),
                      completion_mask=mask, token_rewards=kl)
    expected = torch.tensor([[-0.1, -0.2, 0.7], [1.6, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(per_token_rewards(rollout), expected, rtol=0, atol=1e-15)


def test_gae_hand_computed_and_unscorable_gets_zero():
    # r = [0, 1], V = [0.5, 0.25], gamma = 1, lam = 0.5: delta_1 = 1 - 0.25 = 0.75, A_1 = 0.75;
    # delta_0 = 0 + 0.25 - 0.5 = -0.25, A_0 = -0.25 + 0.5 * 0.75 = 0.125.
    rollout = Rollout(rewards=torch.tensor([1.0, float("nan")], dtype=torch.float64), group_ids=torch.arange(2),
                      completion_mask=torch.ones(2, 2), values=torch.tensor([[0.5, 0.25], [1.0, 1.0]], dtype=torch.float64))
    assert torch.equal(gae(rollout, gamma=1.0, lam=0.5), torch.tensor([[0.125, 0.75], [0.0, 0.0]], dtype=torch.float64))


def test_gae_refuses_missing_values_and_left_padding():
    rollout = random_rollout(0)
    with pytest.raises(ValueError, match="Rollout.values"):
        gae(Rollout(rewards=rollout.rewards, group_ids=rollout.group_ids, completion_mask=rollout.completion_mask))
    left = Rollout(rewards=torch.zeros(1), group_ids=torch.zeros(1, dtype=torch.long),
                   completion_mask=torch.tensor([[0, 1]]), values=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="right-padded"):
        gae(left)


# ---- the six clipping cases of seed 000 §6 ---------------------------------------------

PPO_CASES = [  # (advantage, ratio, gradient is zero)
    (1.0, 1.5, True),    # A > 0, r > 1 + eps: clipped, no gradient
    (1.0, 1.1, False),   # A > 0, inside: normal
    (1.0, 0.5, False),   # A > 0, r < 1 - eps: unclipped, normal
    (-1.0, 1.5, False),  # A < 0, r > 1 + eps: unclipped, normal
    (-1.0, 0.9, False),  # A < 0, inside: normal
    (-1.0, 0.5, True),   # A < 0, r < 1 - eps: clipped, no gradient
]


def ratio_gradient(loss_fn, advantage: float, ratio: float) -> float:
    logps = torch.tensor([[torch.log(torch.tensor(ratio, dtype=torch.float64)).item()]], dtype=torch.float64,
                         requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, _ = loss_fn(logps, old, torch.tensor([[advantage]], dtype=torch.float64), torch.ones(1, 1))
    loss.sum().backward()
    return logps.grad.item()


@pytest.mark.parametrize("advantage,ratio,zero", PPO_CASES)
def test_ppo_clip_six_cases(advantage, ratio, zero):
    ppo_clip = get_registry().get("policy_losses", "ppo_clip")
    grad = ratio_gradient(lambda *a: ppo_clip(*a, epsilon=0.2), advantage, ratio)
    if zero:
        assert grad == 0.0
    else:
        assert grad == pytest.approx(-advantage * ratio, rel=1e-12)  # d(-r A)/d log pi = -r A


def test_ppo_clip_negative_control_two_sided_clip_blocks_corrective_gradient():
    # A wrong variant that clips both ways kills the gradient where seed 000 says it must flow.
    def two_sided(logps, old, advantages, mask):
        return -torch.clamp(torch.exp(logps - old), 0.8, 1.2) * advantages, {}

    assert ratio_gradient(two_sided, 1.0, 0.5) == 0.0
    assert ratio_gradient(get_registry().get("policy_losses", "ppo_clip"), 1.0, 0.5) != 0.0


def test_unclipped_pg_never_clips():
    for advantage, ratio, _ in PPO_CASES:
        assert ratio_gradient(unclipped_pg, advantage, ratio) == pytest.approx(-advantage * ratio, rel=1e-12)


# ---- value clipping ---------------------------------------------------------------------

VALUE_CASES = [  # (return, new value, gradient is zero); V_old = 0, eps_v = 0.2
    (1.0, 0.5, True),    # R above: V moved past +eps towards R, clipped error larger, no gradient
    (1.0, 0.1, False),   # R above: inside the band, normal
    (1.0, -0.5, False),  # R above: V moved away from R past -eps, unclipped error larger, normal
    (-1.0, -0.5, True),  # R below: moved past -eps towards R, no gradient
    (-1.0, -0.1, False),  # R below: inside, normal
    (-1.0, 0.5, False),  # R below: moved away past +eps, normal
]


def value_gradient(loss_fn, target: float, value: float, **params) -> float:
    values = torch.tensor([[value]], dtype=torch.float64, requires_grad=True)
    loss, _ = loss_fn(values, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[target]], dtype=torch.float64),
                      torch.ones(1, 1), **params)
    loss.sum().backward()
    return values.grad.item()


@pytest.mark.parametrize("target,value,zero", VALUE_CASES)
def test_clipped_value_cases(target, value, zero):
    grad = value_gradient(clipped_value, target, value, cliprange_value=0.2)
    assert grad == (0.0 if zero else pytest.approx(value - target, rel=1e-12))


def test_clipped_value_hand_computed_and_negative_control():
    # V = 0.5, V_old = 0, R = 1: (V-R)^2 = 0.25, V_clip = 0.2, (V_clip-R)^2 = 0.64 -> 0.32.
    loss, metrics = clipped_value(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.32, rel=1e-6) and metrics["value/clip_frac"].item() == 1.0
    # A wrong variant with min instead of max lets the critic jump: the gradient flows where it must not.
    def with_min(values, old, returns, mask):
        clipped = old + torch.clamp(values - old, -0.2, 0.2)
        return 0.5 * torch.min((values - returns) ** 2, (clipped - returns) ** 2), {}

    assert value_gradient(with_min, 1.0, 0.5) != 0.0 and value_gradient(clipped_value, 1.0, 0.5) == 0.0


def test_mse_and_huber_hand_computed():
    values, returns = torch.tensor([[0.5, 3.0]]), torch.tensor([[0.0, 0.0]])
    mse, _ = mse_value(values, values, returns, torch.ones(1, 2))
    assert torch.equal(mse, torch.tensor([[0.125, 4.5]]))
    huber, _ = huber_value(values, values, returns, torch.ones(1, 2), huber_delta=1.0)
    assert torch.equal(huber, torch.tensor([[0.125, 2.5]]))  # 1 * (3 - 0.5)
    assert not torch.equal(huber, mse)  # negative control: Huber is linear beyond delta


def test_registered_and_recipes_name_registered_components():
    registry = get_registry()
    assert {"clipped_value", "mse_value", "huber_value"} <= set(registry.names("value_losses"))
    assert registry.get("advantage_estimators", "gae") is gae
    for name in ("ppo", "a2c", "ppo_ptx"):
        recipe = registry.get("algorithms", name)
        assert recipe.trainer == "ppo"
        assert recipe.value_loss in registry.names("value_losses")
        assert recipe.policy_loss in registry.names("policy_losses")
