"""TRL's ``loss_type`` and entropy fields select rlplug components (rlplug.trl.loss_types); precedence; warnings.

Numeric parity of what they select is in tests/test_parity_grpo_objectives.py.
"""

from __future__ import annotations

import warnings

import pytest

from rlplug import build_trainer, get_registry
from rlplug.app.config import ConfigError, parse_train_args
from rlplug.demo.arithmetic import train_dataset
from rlplug.trl.loss_types import LOSS_TYPES, check_loss_type_matches, select_algorithm

BASE = dict(per_device_train_batch_size=4, num_generations=4, max_completion_length=2, bf16=False,
            report_to="none", max_steps=1)
LENGTH_WARNING = "weights each sequence by its completion length"


def build(model_dir, tmp_path, algorithm=None, **overrides):
    return build_trainer(algorithm, model=model_dir, reward_funcs=["arithmetic_exact_match"],
                         train_dataset=train_dataset(), output_dir=str(tmp_path), **{**BASE, **overrides})


def test_every_trl_loss_type_maps_to_a_recipe_made_of_its_components():
    assert set(LOSS_TYPES) == {"grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"}
    for name, entry in LOSS_TYPES.items():
        recipe = get_registry().get("algorithms", entry.algorithm)
        assert (recipe.policy_loss, recipe.aggregation) == (entry.policy_losses[0], entry.aggregation), name
        check_loss_type_matches(recipe, name)


def test_precedence_of_algorithm_and_loss_type():
    assert select_algorithm(None, None) == "grpo"
    assert select_algorithm(None, "vespo") == "vespo"
    assert select_algorithm("dapo", "dapo") == "dapo"
    registry = get_registry()
    check_loss_type_matches(registry.get("algorithms", "gspo"), "grpo")  # GSPO is grpo at sequence level
    with pytest.raises(ValueError, match="algorithm 'grpo' .* contradicts loss_type='sapo'"):
        check_loss_type_matches(registry.get("algorithms", "grpo"), "sapo")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        select_algorithm(None, "sigmoid")


def test_trl_fields_alone_select_the_components(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path, loss_type="cispo", importance_sampling_level="sequence")
    assert (trainer.components.policy_loss.name, trainer.components.aggregation.name) == ("cispo", "global_token_mean")
    assert trainer.components.policy_loss.params["importance_sampling_level"] == "sequence"
    params = trainer.components.policy_loss.params
    # TRL's default: epsilon_high unset means epsilon (cap 0.2), bound as GRPOTrainer reads it; not the recipe's 5.0
    assert params["epsilon_high"] == 0.2 and params["epsilon"] == 0.2
    assert trainer.args.loss_type == "cispo"
    named = build(tiny_model_dir, tmp_path, "cispo")
    assert named.components.policy_loss.params["epsilon_high"] == 5.0  # by name: the recipe's defaults
    # rlplug component names win over loss_type
    explicit = build(tiny_model_dir, tmp_path, loss_type="grpo", aggregation="local_token_mean")
    assert explicit.components.aggregation.name == "local_token_mean"
    with pytest.raises(ValueError, match="contradicts loss_type='vespo'"):
        build(tiny_model_dir, tmp_path, "grpo", loss_type="vespo")


def test_loss_type_and_entropy_fields_build_the_matching_trainer(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path, loss_type="sapo", importance_sampling_level="sequence",
                    entropy_coef=0.01, use_adaptive_entropy=True, top_entropy_quantile=0.2)
    assert trainer.components.policy_loss.name == "sapo"
    assert trainer.components.policy_loss.params["importance_sampling_level"] == "sequence"


def test_sequence_ratio_with_a_token_summing_aggregation_warns_as_trl(tiny_model_dir, tmp_path):
    with pytest.warns(UserWarning, match=LENGTH_WARNING):
        build(tiny_model_dir, tmp_path, "gspo", aggregation="global_token_mean")
    with pytest.warns(UserWarning, match=LENGTH_WARNING):
        build(tiny_model_dir, tmp_path, loss_type="dapo", importance_sampling_level="sequence")
    with warnings.catch_warnings():  # negative control: the GSPO paper's setup does not warn
        warnings.filterwarnings("error", message=f".*{LENGTH_WARNING}")
        build(tiny_model_dir, tmp_path, "gspo")
        build(tiny_model_dir, tmp_path, loss_type="grpo", importance_sampling_level="sequence")


def test_sequence_level_on_a_loss_without_it_warns(tiny_model_dir, tmp_path):
    with pytest.warns(UserWarning, match="'vespo' sets its own importance-sampling level"):
        build(tiny_model_dir, tmp_path, "vespo", importance_sampling_level="sequence")


def test_cli_picks_the_recipe_of_loss_type_unless_algorithm_is_given(tmp_path):
    assert parse_train_args(["--loss_type", "sapo"]).recipe.name == "sapo"
    assert parse_train_args(["--loss_type", "luspo"]).recipe.config_defaults == {}
    assert parse_train_args(["--algorithm", "luspo"]).recipe.config_defaults == {"importance_sampling_level": "sequence"}
    config = tmp_path / "trl.yaml"
    config.write_text("loss_type: vespo\nentropy_coef: 0.01\ntop_entropy_quantile: 0.2\n")
    settings = parse_train_args(["--config", str(config)])
    assert settings.recipe.name == "vespo"
    assert settings.trainer_fields == {"entropy_coef": 0.01, "loss_type": "vespo", "top_entropy_quantile": 0.2}
    assert parse_train_args(["--algorithm", "gspo", "--loss_type", "grpo"]).recipe.name == "gspo"
    with pytest.raises(ConfigError, match="algorithm 'grpo' .* contradicts loss_type='sapo'"):
        parse_train_args(["--algorithm", "grpo", "--loss_type", "sapo"])
