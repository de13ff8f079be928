"""Issue 11, crash 2: a TRL config field set to None binds by TRL's meaning, not as None."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOConfig

from rlplug.cli import train as main
from rlplug import hookimpl
from rlplug.core import plugins
from rlplug.core.plugins import get_registry
from rlplug.core.resolve import ComponentConfigError, bind_component


@pytest.fixture(scope="module")
def grpo_config(tmp_path_factory):
    return GRPOConfig(output_dir=str(tmp_path_factory.mktemp("cfg")), use_cpu=True, bf16=False, report_to="none")


def test_cispo_outside_its_recipe_trains(tmp_path):
    out = tmp_path / "run"
    argv = ["--algorithm", "grpo", "--policy_loss", "cispo", "--max_steps", "1", "--output_dir", str(out)]
    assert main(argv) == 0
    steps = [row for row in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in row]
    assert len(steps) == 1 and "cispo_clip_ratio" in json.dumps(steps[0])


def test_epsilon_high_none_binds_epsilon_as_grpo_trainer_does(grpo_config):
    assert grpo_config.epsilon_high is None and grpo_config.epsilon == 0.2
    # GRPOTrainer.__init__: self.epsilon_high = args.epsilon_high if not None else args.epsilon
    assert bind_component("policy_losses", "cispo", {}, grpo_config).params["epsilon_high"] == 0.2
    assert bind_component("policy_losses", "ppo_clip", {}, grpo_config).params["epsilon_high"] == 0.2
    grpo_config.epsilon_high = 5.0
    try:
        assert bind_component("policy_losses", "cispo", {}, grpo_config).params["epsilon_high"] == 5.0
    finally:
        grpo_config.epsilon_high = None


def test_cispo_with_the_bound_epsilon_high_matches_trls_cispo_weights(grpo_config):
    """TRL's cispo: clamp(ratio, max=epsilon_high).detach() * -A * logp (grpo_trainer.py)."""
    cispo = bind_component("policy_losses", "cispo", {}, grpo_config)
    logps = torch.tensor([[-1.0, -0.5]])
    old_logps = torch.tensor([[-1.5, -0.5]])
    advantages = torch.tensor([[2.0]])
    loss, _ = cispo(logps, old_logps, advantages, torch.ones(1, 2))
    expected = -torch.tensor([[0.2, 0.2]]) * 2.0 * logps  # exp(0.5) and exp(0) both above 0.2
    assert torch.equal(loss, expected)


def test_a_none_field_without_a_trl_meaning_leaves_the_default(grpo_config):
    assert grpo_config.delta is None
    assert "delta" not in bind_component("policy_losses", "ppo_clip", {}, grpo_config).params


def test_explicit_none_is_passed_as_given(grpo_config):
    assert bind_component("policy_losses", "ppo_clip", {"epsilon_high": None}, grpo_config).params["epsilon_high"] is None


def test_a_required_parameter_with_a_none_field_is_an_error_naming_it():
    def needs_margin(logps, old_logps, advantages, mask, margin):
        return logps * margin, {}

    class NeedsMargin:
        @hookimpl
        def register_policy_losses(self, register):
            register("needs_margin", needs_margin)

    plugins.get_plugin_manager().register(NeedsMargin(), name="test-needs-margin")
    plugins.invalidate_registry()
    with pytest.raises(ComponentConfigError, match="needs parameter 'margin'"):
        bind_component("policy_losses", "needs_margin", {}, SimpleNamespace(margin=None))
    assert bind_component("policy_losses", "needs_margin", {}, SimpleNamespace(margin=2.0)).params == {"margin": 2.0}


def clamped_ratio_loss(logps, old_logps, advantages, mask, epsilon=0.2, epsilon_high=0.3):
    """-clamp(pi/pi_old, max=1+epsilon_high) * A, a test loss with no None handling of its own."""
    ratio = torch.exp(logps - old_logps)
    return -torch.clamp(ratio, max=1 + epsilon_high) * advantages, {}


def test_negative_control_binding_the_none_would_crash_a_loss(register_component, grpo_config):
    """The former binding passed epsilon_high=None through; a loss that clamps at it then has no bound."""
    register_component("policy_losses", "clamped_ratio_loss", clamped_ratio_loss)
    data = (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 1), torch.ones(1, 2))
    with pytest.raises(TypeError):
        clamped_ratio_loss(*data, epsilon_high=None)  # what binding None as is did
    bound = bind_component("policy_losses", "clamped_ratio_loss", {}, grpo_config)
    assert bound.params == {"epsilon": 0.2, "epsilon_high": 0.2}
    assert torch.equal(bound(*data)[0], -torch.ones(1, 2))