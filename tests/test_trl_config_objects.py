"""A TRL config object passed to ``build_trainer(args=...)`` works unchanged: the fields it sets
pick the matching rlplug components and reach the trainer's config."""

from __future__ import annotations

from trl import DPOConfig, GRPOConfig, KTOConfig

from rlplug import build_trainer
from rlplug.demo.arithmetic import train_dataset
from rlplug.demo.arithmetic_preference import preference_dataset
from rlplug.trl.build import fields_set_in

COMMON = dict(bf16=False, report_to="none", use_cpu=True, max_steps=1)


def test_only_the_fields_a_user_set_count(tmp_path):
    config = DPOConfig(output_dir=str(tmp_path), loss_type="hinge", beta=0.3, **COMMON)
    assert fields_set_in(config) == {
        "output_dir": str(tmp_path), "loss_type": ["hinge"], "beta": 0.3, "bf16": False, "fp16": False,
        "use_cpu": True, "max_steps": 1,
    }  # learning_rate and the rest are left at TRL's defaults, so a recipe's own defaults still apply


def test_a_dpo_config_picks_the_matching_loss(tiny_model_dir, tmp_path):
    config = DPOConfig(output_dir=str(tmp_path), loss_type="hinge", beta=0.3, per_device_train_batch_size=4,
                       **COMMON)
    trainer = build_trainer("dpo", model=tiny_model_dir, args=config,
                            train_dataset=preference_dataset("paired").select(range(8)))
    assert trainer.components.loss.name == "dpo_hinge"
    assert trainer.components.loss.params["beta"] == 0.3
    assert trainer.args.output_dir == str(tmp_path) and trainer.args.per_device_train_batch_size == 4
    # Negative control: the same call without the config object runs the recipe's own loss.
    plain = build_trainer("dpo", model=tiny_model_dir, output_dir=str(tmp_path), per_device_train_batch_size=4,
                          train_dataset=preference_dataset("paired").select(range(8)), **COMMON)
    assert plain.components.loss.name == "dpo_sigmoid"


def test_a_grpo_config_picks_the_matching_loss_and_keywords_win(tiny_model_dir, tmp_path):
    config = GRPOConfig(output_dir=str(tmp_path), loss_type="sapo", per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=2, learning_rate=3e-4, **COMMON)
    trainer = build_trainer(model=tiny_model_dir, args=config, reward_funcs=["arithmetic_exact_match"],
                            train_dataset=train_dataset(), learning_rate=1e-3)
    assert trainer.components.policy_loss.name == "sapo"
    assert trainer.args.learning_rate == 1e-3  # the keyword override wins over the object


def test_a_kto_config_reaches_the_unpaired_trainer(tiny_model_dir, tmp_path):
    config = KTOConfig(output_dir=str(tmp_path), desirable_weight=2.0, per_device_train_batch_size=4, **COMMON)
    trainer = build_trainer("kto", model=tiny_model_dir, args=config,
                            train_dataset=preference_dataset("unpaired").select(range(8)))
    assert trainer.args.desirable_weight == 2.0
