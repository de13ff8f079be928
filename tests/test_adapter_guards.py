"""The online adapter refuses what it does not reimplement and checks TRL's internals."""

import pytest
from trl import GRPOTrainer

from rlplug import build_trainer
from rlplug.components.kl_placement import KLConfigError
from rlplug.core.resolve import ComponentConfigError
from rlplug.demo.arithmetic import train_dataset
from rlplug.trl.compat import TRLCompatibilityError, check_methods
from rlplug.trl.grpo import _RELIED_ON

BASE = dict(per_device_train_batch_size=4, num_generations=4, max_completion_length=2, bf16=False,
            report_to="none", max_steps=1)


def build(model_dir, tmp_path, algorithm="grpo", **overrides):
    return build_trainer(algorithm, model=model_dir, reward_funcs=["arithmetic_exact_match"],
                         train_dataset=train_dataset(), output_dir=str(tmp_path), **{**BASE, **overrides})


def test_supported_configuration_builds(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path)
    assert trainer.components.policy_loss.name == "ppo_clip"
    # epsilon_high=None binds epsilon, as GRPOTrainer reads it; delta=None leaves the default (docs/hooks.md)
    assert trainer.components.policy_loss.params == {
        "epsilon": 0.2, "epsilon_high": 0.2, "importance_sampling_level": "token"
    }


def test_recipe_defaults_reach_the_loss_and_user_values_win(tiny_model_dir, tmp_path):
    assert build(tiny_model_dir, tmp_path, "dapo").components.policy_loss.params["epsilon_high"] == 0.28
    trainer = build(tiny_model_dir, tmp_path, "dapo", epsilon_high=0.3)
    assert trainer.components.policy_loss.params["epsilon_high"] == 0.3


def test_unknown_component_param_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ComponentConfigError, match="'ppo_clip' does not take parameter\\(s\\) epsilon_hi"):
        build_trainer("grpo", model=tiny_model_dir, component_params={"policy_loss": {"epsilon_hi": 0.3}},
                      output_dir=str(tmp_path), **BASE)


def test_k1_in_the_loss_without_ratio_is_refused_before_any_model_loads(tmp_path):
    """The spec refused here is the one tests/test_kl_gradients.py shows has zero expected gradient."""
    kl = {"estimator": "k1", "placement": "loss", "coef": 0.1, "importance_ratio": False}
    with pytest.raises(KLConfigError, match="k1 in the loss without the importance ratio"):
        build_trainer("grpo", model="/nonexistent", kl=kl, output_dir=str(tmp_path), **BASE)


def test_k1_in_the_loss_with_ratio_builds_quietly(tiny_model_dir, tmp_path, recwarn):
    """Negative control for the refusal: k1 x pi/pi_old in the loss is exact (tests/test_kl_gradients.py)."""
    trainer = build(tiny_model_dir, tmp_path, kl={"estimator": "k1", "placement": "loss", "coef": 0.1})
    assert trainer.components.kl.importance_ratio and trainer.components.kl.future_kl_correction
    assert not [w for w in recwarn if "kl:" in str(w.message)]


def test_trl_beta_sets_the_kl_coefficient_and_both_is_an_error(tiny_model_dir, tmp_path):
    with pytest.warns(UserWarning, match="exact per token but biased for whole sequences"):
        trainer = build(tiny_model_dir, tmp_path, beta=0.04)
    assert trainer.components.kl.coef == 0.04 and trainer.beta == 0.04
    assert not trainer.components.kl.future_kl_correction  # TRL's own per-token k3 term, for parity
    with pytest.raises(ValueError, match="give the KL coefficient once"):
        build(tiny_model_dir, tmp_path, beta=0.04, kl={"coef": 0.1})


def test_trl_internals_check_passes_on_the_pinned_trl_and_catches_changes():
    check_methods(GRPOTrainer, _RELIED_ON)

    class ChangedTrainer(GRPOTrainer):
        def _compute_loss(self, inputs, model):  # parameters swapped, as a future TRL might
            return None

    with pytest.raises(TRLCompatibilityError, match="_compute_loss takes"):
        check_methods(ChangedTrainer, _RELIED_ON)

    class MissingTrainer:
        pass

    with pytest.raises(TRLCompatibilityError, match="is gone"):
        check_methods(MissingTrainer, _RELIED_ON)
