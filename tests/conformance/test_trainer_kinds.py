"""What a TRL user meets, for every trainer kind: uneven epochs, evaluation, streaming data,
gradient accumulation, LoRA / QLoRA / model objects, and each kind's own options.

Every run must end at the step count TRL's schedule gives, with finite losses and changed
weights; the negative control in each case is the weight check (a run that trained nothing
fails it).
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from conformance_kit import changed, losses, make, nf4_model, rows, weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def trains(trainer, steps: int) -> None:
    model = trainer.model
    before = weights(model)
    trainer.train()
    assert trainer.state.global_step == steps
    assert losses(trainer) and all(math.isfinite(loss) for loss in losses(trainer))
    assert changed(before, model), "no weight moved"


# Steps per epoch for 9 rows and 4 per batch: preference kinds keep the short last batch
# (1 row) -> 3; the online sampler keeps whole batches of 2 prompts only -> 4.
STEPS_FOR_TWO_EPOCHS_OF_9 = {"online": 8, "paired": 6, "unpaired": 6}


def test_two_uneven_epochs_run_to_the_end(kind, tiny_model_dir, tmp_path):
    trainer = make(kind, tiny_model_dir, tmp_path, rows(kind, 9), max_steps=-1, num_train_epochs=2)
    trains(trainer, STEPS_FOR_TWO_EPOCHS_OF_9[kind])
    assert trainer.state.epoch == 2


def test_evaluation_during_training_and_after(kind, tiny_model_dir, tmp_path):
    trainer = make(kind, tiny_model_dir, tmp_path, eval_dataset=rows(kind, 6), eval_strategy="steps",
                   eval_steps=1, per_device_eval_batch_size=4, max_steps=2)
    trains(trainer, 2)
    assert [row["step"] for row in trainer.state.log_history if "eval_loss" in row] == [1, 2]
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["epoch"] > 0


def test_streaming_dataset(kind, tiny_model_dir, tmp_path):
    trainer = make(kind, tiny_model_dir, tmp_path, rows(kind, 16).to_iterable_dataset(), max_steps=2)
    trains(trainer, 2)


def test_gradient_accumulation(kind, tiny_model_dir, tmp_path):
    fields = {"gradient_accumulation_steps": 2, "max_steps": 2}
    if kind == "online":
        fields["steps_per_generation"] = 4  # one generation feeds 4 micro-batches = 2 optimizer steps
    trainer = make(kind, tiny_model_dir, tmp_path, rows(kind, 16), **fields)
    trains(trainer, 2)


def test_model_passed_as_an_object(kind, tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = make(kind, model, tmp_path, max_steps=1)
    assert trainer.model is model
    trains(trainer, 1)


def test_lora(kind, tiny_model_dir, tmp_path):
    trainer = make(kind, tiny_model_dir, tmp_path, peft_config=lora(), max_steps=1)
    trains(trainer, 1)
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)


def test_qlora_4bit(kind, tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    trainer = make(kind, nf4_model(tiny_model_dir), tmp_path, peft_config=lora(), max_steps=1)
    assert any(isinstance(module, bnb.nn.Linear4bit) for module in trainer.model.modules())
    trains(trainer, 1)


@pytest.mark.parametrize("preference", ["paired", "unpaired"])
def test_precomputed_reference_log_probs(preference, tiny_model_dir, tmp_path):
    trainer = make(preference, tiny_model_dir, tmp_path, precompute_ref_log_probs=True, max_steps=2)
    assert trainer.precompute_ref_logps
    trains(trainer, 2)


@pytest.mark.parametrize("preference", ["paired", "unpaired"])
def test_synced_reference_model(preference, tiny_model_dir, tmp_path):
    trainer = make(preference, tiny_model_dir, tmp_path, sync_ref_model=True, ref_model_sync_steps=1, max_steps=2)
    reference = weights(trainer.ref_model)
    trains(trainer, 2)
    assert changed(reference, trainer.ref_model), "the reference model was never synced"


def test_online_num_iterations(tiny_model_dir, tmp_path):
    trainer = make("online", tiny_model_dir, tmp_path, rows("online", 16), num_iterations=2, max_steps=2)
    trains(trainer, 2)
