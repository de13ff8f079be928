"""LoRA and QLoRA (4-bit nf4) GRPO runs on CPU: they train, log the reward, save the adapter.

The saved adapter, loaded back onto a freshly loaded base, reproduces the trained model's
logits; the base without it does not (the negative control: a run that trained nothing,
or saved the wrong weights, is caught).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed

from rlplug.trl.build import build_trainer
from rlplug.demo.arithmetic import all_problems

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # bitsandbytes: no `kernels` package on CPU


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Fraction of the completion's characters that are digits: varies within a group."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def nf4_config() -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")


def train_grpo(model: Any, tokenizer: Any, output_dir: Path) -> Any:
    set_seed(0)
    trainer = build_trainer(
        "grpo", model=model, processing_class=tokenizer, reward_funcs=[digit_fraction_reward],
        peft_config=lora_config(),
        train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:16]]),
        output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
        max_steps=2, learning_rate=5e-2, logging_steps=1, bf16=False, use_cpu=True, save_strategy="no",
        report_to="none", disable_tqdm=True,
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer


def logits(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = tokenizer(["1+2+3=", "9+9+9="], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def check_run(trainer: Any, output_dir: Path, fresh_base: Any, tokenizer: Any) -> None:
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 2 and trainer.state.global_step == 2
    assert (output_dir / "adapter_model.safetensors").is_file()
    assert (output_dir / "adapter_config.json").is_file()
    assert not (output_dir / "model.safetensors").exists(), "the full model was saved, not the adapter"

    trained = trainer.model.eval()
    restored = PeftModel.from_pretrained(fresh_base, str(output_dir)).eval()
    # Under QLoRA, TRL trains the adapter in bf16 (QLoRA paper, section 3); PEFT upcasts it to float32 on
    # load. Casting back, as TRL does, is lossless and makes the forward the same op for op.
    trained_dtypes = {name: p.dtype for name, p in trained.named_parameters() if "lora_" in name}
    for name, param in restored.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(trained_dtypes[name])
    assert torch.equal(logits(restored, tokenizer), logits(trained, tokenizer))
    with restored.disable_adapter():
        base_logits = logits(restored, tokenizer)
    assert not torch.allclose(base_logits, logits(trained, tokenizer), atol=1e-4), "the adapter changed nothing"


def test_lora_grpo_run_saves_adapter(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = train_grpo(model, tokenizer, tmp_path)
    assert sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) < sum(
        p.numel() for p in trainer.model.parameters()
    ) / 2, "LoRA should train a small fraction of the weights"
    check_run(trainer, tmp_path, AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tokenizer)


def test_qlora_nf4_grpo_run_saves_adapter(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, quantization_config=nf4_config(), dtype=torch.float32, device_map="cpu"
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    trainer = train_grpo(model, tokenizer, tmp_path)

    quantized = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized, "no 4-bit layers: the model was not quantized"
    assert {m.weight.quant_state.quant_type for m in quantized} == {"nf4"}
    assert all(m.weight.quant_state.nested for m in quantized), "double quantization is off"
    fresh_base = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, quantization_config=nf4_config(), dtype=torch.float32, device_map="cpu"
    )
    check_run(trainer, tmp_path, fresh_base, tokenizer)
