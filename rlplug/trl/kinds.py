"""The trainer kinds the TRL adapters provide. Importing this module imports no TRL."""

from __future__ import annotations

from typing import Any

from rlplug.core.hookspecs import hookimpl
from rlplug.core.trainer_kinds import TrainerKind, lazy_attribute

_CPU_FRIENDLY: dict[str, Any] = {
    "bf16": False,  # TRL turns bf16 on even on CPU; it slows a tiny model down
    "activation_checkpointing": False,  # costs time for nothing at this scale
    "logging_steps": 0.025,  # about 40 logged points whatever max_steps is
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_pin_memory": False,
}

# Measured with LoRA on the warmed-up tiny model: +0.15 to +0.27 held-out accuracy for dpo/ipo.
_PREFERENCE_EMBEDDED: dict[str, Any] = {
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",  # a constant rate lets DPO suppress EOS
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 128,
    "max_length": 12,  # "a+b+c=" + two digits + EOS; also the evaluation's generation budget
    "max_steps": 300,
    **_CPU_FRIENDLY,
}

ONLINE = TrainerKind(
    name="online",
    trainer_class=lazy_attribute("rlplug.trl.grpo", "RLPlugGRPOTrainer"),
    config_class=lazy_attribute("trl", "GRPOConfig"),
    report_headline={"reward": "reward"},
    report_panels=(("reward", "mean reward per completion"), ("kl", "KL(policy || reference), per token")),
    embedded_defaults={
        "learning_rate": 1e-3,  # TRL's 1e-6 does nothing at this scale
        "per_device_train_batch_size": 128,  # completions: 16 prompts x 8
        "num_generations": 8,
        "max_completion_length": 4,  # at most two digits and EOS
        "temperature": 1.0,
        "per_device_eval_batch_size": 128,  # also the batch of the held-out greedy evaluation
        "max_steps": 300,
        "beta": 0.01,  # a small KL to the base model, so the run logs how far the policy moved
        **_CPU_FRIENDLY,
    },
)

PPO = TrainerKind(
    name="ppo",
    trainer_class=lazy_attribute("rlplug.trl.ppo", "RLPlugPPOTrainer"),
    config_class=lazy_attribute("rlplug.trl.ppo", "RLPlugPPOConfig"),
    report_headline={"reward": "reward", "explained variance": "critic/explained_variance"},
    report_panels=(("reward", "mean reward per completion"),
                   ("critic/explained_variance", "critic explained variance, 1 - Var(R - V) / Var(R)"),
                   ("kl", "KL(policy || reference), per token")),
    embedded_defaults={**ONLINE.embedded_defaults, "num_generations": 1},
)

PAIRED_PREFERENCE = TrainerKind(
    name="paired_preference",
    trainer_class=lazy_attribute("rlplug.trl.dpo", "RLPlugDPOTrainer"),
    config_class=lazy_attribute("trl", "DPOConfig"),
    beta_is_kl_coef=False,
    takes_reward_funcs=False,
    preference_data="paired",
    report_headline={"margin": "rewards/margins", "accuracy": "rewards/accuracies"},
    report_panels=(("rewards/margins", "preference margin (chosen - rejected)"),
                   ("rewards/accuracies", "preference accuracy (chosen > rejected)")),
    embedded_defaults=_PREFERENCE_EMBEDDED,
)

UNPAIRED_PREFERENCE = TrainerKind(
    name="unpaired_preference",
    trainer_class=lazy_attribute("rlplug.trl.kto", "RLPlugKTOTrainer"),
    config_class=lazy_attribute("trl", "KTOConfig"),
    beta_is_kl_coef=False,
    takes_reward_funcs=False,
    preference_data="unpaired",
    report_headline={"margin": "rewards/margins"},
    report_panels=(("rewards/margins", "reward margin (desirable - undesirable)"), ("kl", "KL reference point z_ref")),
    embedded_defaults=_PREFERENCE_EMBEDDED,
)

# Rounds of the paired adapter on pairs sampled from the policy (rlplug/trl/iterative.py).
ITERATIVE_PREFERENCE = TrainerKind(
    name="iterative_preference",
    trainer_class=lazy_attribute("rlplug.trl.iterative", "RLPlugIterativeDPOTrainer"),
    config_class=lazy_attribute("rlplug.trl.iterative", "IterativeDPOConfig"),
    beta_is_kl_coef=False,
    report_headline=PAIRED_PREFERENCE.report_headline,
    report_panels=PAIRED_PREFERENCE.report_panels,
    embedded_defaults={**_PREFERENCE_EMBEDDED, "max_completion_length": 4, "num_generations": 8},
)


@hookimpl
def register_trainer_kinds(register):
    register(ONLINE)
    register(PPO)
    register(PAIRED_PREFERENCE)
    register(UNPAIRED_PREFERENCE)
    register(ITERATIVE_PREFERENCE)
