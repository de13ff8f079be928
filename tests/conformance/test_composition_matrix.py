"""Every registered component combines with every other, and every recipe trains.

The lists come from the registry, so a component or recipe added by any plugin is covered
without editing this file.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from rlplug.app.report import SUMMARY_FILE
from rlplug.cli import train as main
from rlplug.core.aggregation import AggregationContext
from rlplug.core.plugins import get_registry
from rlplug.core.resolve import bind_component
from rlplug.core.rollout import Rollout
from rlplug.testing.batches import make_rollout, toy_rollout

from conformance_kit import make, weights, changed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REGISTRY = get_registry()
ADVANTAGES = REGISTRY.names("advantage_estimators")
POLICY_LOSSES = REGISTRY.names("policy_losses")
AGGREGATIONS = REGISTRY.names("loss_aggregations")
ALGORITHMS = REGISTRY.names("algorithms")


def process_rollout():
    """The toy rollout's groups and lengths with per-step rewards instead of outcomes: steps at
    each completion's first and last token (process supervision)."""
    outcome = toy_rollout()
    mask = outcome.completion_mask
    lengths = mask.sum(1).long()
    step_mask = torch.zeros_like(mask, dtype=torch.bool)
    step_mask[:, 0] = True
    step_mask[torch.arange(mask.shape[0]), lengths - 1] = True
    values = torch.linspace(-1.0, 1.0, mask.numel()).reshape(mask.shape)
    token_rewards = torch.where(step_mask, values, torch.zeros_like(values))
    return make_rollout([0.0] * 8, outcome.group_ids.tolist(), lengths.tolist(), token_rewards=token_rewards,
                        step_mask=step_mask)


def critic_rollout():
    """The toy rollout with a critic's values at rollout time (what an actor-critic estimator reads)."""
    outcome = toy_rollout()
    values = torch.linspace(-0.5, 0.5, outcome.completion_mask.numel()).reshape(outcome.completion_mask.shape)
    return dataclasses.replace(outcome, values=values * outcome.completion_mask)


def multi_reward_rollout():
    """The toy rollout scored by two weighted reward functions (what a per-function estimator reads)."""
    outcome = toy_rollout()
    second = torch.linspace(0.0, 1.0, outcome.batch_size)
    per_func = torch.stack([outcome.rewards, second], dim=1)
    weights = torch.tensor([1.0, 0.5])
    return dataclasses.replace(outcome, rewards=per_func @ weights, rewards_per_func=per_func, reward_weights=weights)


def advantages_of(advantage: str) -> tuple[Rollout, torch.Tensor]:
    """An estimator's advantages on the first rollout it accepts: outcome rewards, per-step
    rewards, outcome rewards with critic values, or rewards per reward function. Refusing one
    must be a ValueError; refusing all fails."""
    refusals = []
    for rollout in (toy_rollout(), process_rollout(), critic_rollout(), multi_reward_rollout()):
        try:
            return rollout, bind_component("advantage_estimators", advantage, {})(rollout)
        except ValueError as error:
            refusals.append(str(error))
    raise AssertionError(f"{advantage} refused every rollout shape: {refusals}")


def loss_of_one_step(advantage: str, policy_loss: str, aggregation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The aggregated loss and d loss / d logps of one step on a toy rollout (B=8, T=3),
    each component bound with its default parameters."""
    rollout, advantages = advantages_of(advantage)
    mask = rollout.completion_mask
    assert advantages.shape in ((8,), (8, 3)) and torch.isfinite(advantages).all()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    probs = torch.linspace(0.2, 0.8, mask.numel()).reshape(mask.shape)
    logps = probs.log().requires_grad_(True)
    old_logps = (logps + 0.05 * torch.cos(torch.arange(mask.numel(), dtype=torch.float32)).reshape(mask.shape)).detach()
    per_token_loss, _ = bind_component("policy_losses", policy_loss, {})(logps, old_logps, advantages, mask)
    context = AggregationContext(num_items_in_batch=mask.sum(), max_completion_length=mask.shape[1])
    loss = bind_component("loss_aggregations", aggregation, {})(per_token_loss, mask, context)
    loss.backward()
    return loss.detach(), logps.grad


def check_step(loss: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor) -> None:
    assert loss.dim() == 0 and math.isfinite(loss.item()), f"loss {loss}"
    assert torch.isfinite(grad).all(), "non-finite gradient"
    assert grad.abs().sum() > 0, "no gradient reaches the log-probs"
    assert not (grad * (1 - mask)).any(), "gradient on padding tokens"


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("policy_loss", POLICY_LOSSES)
@pytest.mark.parametrize("advantage", ADVANTAGES)
def test_every_advantage_loss_and_aggregation_combine(advantage, policy_loss, aggregation):
    per_token = advantages_of(advantage)[1].dim() == 2
    try:
        loss, grad = loss_of_one_step(advantage, policy_loss, aggregation)
    except ValueError as error:
        # The one deliberate refusal: a sequence-level loss given per-token advantages says so.
        assert per_token and f"{policy_loss} needs one advantage per sequence" in str(error), error
        return
    check_step(loss, grad, toy_rollout().completion_mask)


def test_negative_control_the_step_check_catches_a_dead_or_leaking_gradient():
    mask = toy_rollout().completion_mask
    with pytest.raises(AssertionError, match="no gradient"):
        check_step(torch.tensor(0.0), torch.zeros_like(mask), mask)
    with pytest.raises(AssertionError, match="padding"):
        check_step(torch.tensor(0.0), torch.ones_like(mask), mask)


@pytest.mark.parametrize("policy_loss", POLICY_LOSSES)
def test_every_policy_loss_trains_a_step_in_the_online_trainer(policy_loss, tiny_model_dir, tmp_path):
    trainer = make("online", tiny_model_dir, tmp_path, policy_loss=policy_loss, max_steps=1)
    assert trainer.components.policy_loss.name == policy_loss
    before = weights(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 1 and changed(before, trainer.model)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_two_steps_from_the_command_line(algorithm, tmp_path):
    out = tmp_path / "run"
    assert main(["--algorithm", algorithm, "--max_steps", "2", "--output_dir", str(out)]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["algorithm"] == algorithm and summary["steps"] == 2
    losses = [row["loss"] for row in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "loss" in row]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_negative_control_an_unknown_algorithm_is_a_clear_error(tmp_path, capsys):
    assert main(["--algorithm", "no_such_algorithm", "--max_steps", "2", "--output_dir", str(tmp_path)]) != 0
    assert "unknown algorithm 'no_such_algorithm'" in capsys.readouterr().err
