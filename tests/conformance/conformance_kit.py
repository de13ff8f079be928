"""Shared set-up of the conformance suite: one recipe per trainer kind, tiny data, tiny model.

Each kind is exercised through ``rlplug.build_trainer`` exactly as a TRL user would call a
TRL trainer: a model path or object, a ``datasets`` dataset, TRL config fields by name.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from rlplug import build_trainer
from rlplug.demo.arithmetic import train_dataset
from rlplug.demo.arithmetic_preference import preference_dataset

KINDS = {"online": "grpo", "paired": "dpo", "unpaired": "kto"}
"""Trainer kind -> the recipe that exercises it (RLPlugGRPOTrainer, RLPlugDPOTrainer, RLPlugKTOTrainer)."""

COMMON = dict(bf16=False, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
              learning_rate=1e-2, seed=0)
PER_KIND = {
    # 4 completions per step = 2 prompts x 2 generations.
    "online": dict(per_device_train_batch_size=4, num_generations=2, max_completion_length=4),
    "paired": dict(per_device_train_batch_size=4, max_length=32),
    "unpaired": dict(per_device_train_batch_size=4, max_length=32),
}


def rows(kind: str, count: int) -> Any:
    """``count`` training rows of the kind's data (prompts with answers, pairs, labelled completions)."""
    dataset = train_dataset() if kind == "online" else preference_dataset(kind)
    return dataset.select(range(count))


def text_hash_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """A reward that differs between almost any two different completions, so every group of a
    randomly initialised model has a non-zero advantage and every step moves the weights."""
    return [(sum(map(ord, text)) % 97) / 97 for text in completions]


def make(kind: str, model: Any, output_dir: Any, train: Any = None, **fields: Any) -> Any:
    """A trainer of ``kind`` on ``train`` (default: 8 rows); ``fields`` are TRL config fields or build_trainer's."""
    extra = {"reward_funcs": [text_hash_reward]} if kind == "online" else {}
    return build_trainer(KINDS[kind], model=model, train_dataset=rows(kind, 8) if train is None else train,
                         output_dir=str(output_dir), **extra, **{**COMMON, **PER_KIND[kind], **fields})


def weights(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: Any) -> list[str]:
    return [name for name, p in model.named_parameters() if name in before and not torch.equal(before[name], p)]


def losses(trainer: Any) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def nf4_model(model_dir: str) -> Any:
    from peft import prepare_model_for_kbit_training

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, dtype=torch.float32,
                                                 device_map="cpu")
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
