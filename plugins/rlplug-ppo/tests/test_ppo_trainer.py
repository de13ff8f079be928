"""The ppo trainer kind on the tiny model: a critic behind a second LoRA adapter on the same
base, old values in the rollout, both adapters and the value head trained, one completion per
prompt, a2c and ppo_ptx, QLoRA with one base, and bitwise resume of the critic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed

from rlplug import build_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def digit_reward(completions: list[str], **kwargs: Any) -> list[float]:
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def prompts(n: int = 16) -> Dataset:
    return Dataset.from_list([{"prompt": f"{i % 10}+{(3 * i) % 10}+1="} for i in range(n)])


def make_trainer(model: Any, tokenizer: Any, output_dir: Path, algorithm: str = "ppo", trainer_inputs: Any = None,
                 **overrides: Any) -> Any:
    set_seed(0)
    fields = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_completion_length=4, max_steps=2,
        learning_rate=5e-2, logging_steps=1, bf16=False, use_cpu=True, save_strategy="no", report_to="none",
        disable_tqdm=True,
    )
    fields.update(overrides)
    return build_trainer(
        algorithm, model=model, processing_class=tokenizer, reward_funcs=[digit_reward],
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        train_dataset=prompts(), trainer_inputs=trainer_inputs, **fields,
    )


def snapshot(model: Any, marker: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if marker in n}


def test_ppo_trains_policy_and_critic_with_one_completion_per_prompt(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = make_trainer(model, tokenizer, tmp_path, num_iterations=2)
    assert trainer.num_generations == 1
    policy, critic = snapshot(trainer.model, ".default."), snapshot(trainer.model, ".critic.")
    head = snapshot(trainer.model, "rlplug_value_head")
    assert policy and critic and len(policy) == len(critic)
    trainer.train()
    changed = lambda before, marker: any(  # noqa: E731
        not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if marker in n)
    assert changed(policy, ".default."), "the policy adapter did not train"
    assert changed(critic, ".critic."), "the critic adapter did not train"
    assert changed(head, "rlplug_value_head"), "the value head did not train"
    # num_iterations=2: one rollout (old values, explained variance) for two optimizer steps.
    assert len([e for e in trainer.state.log_history if "critic/explained_variance" in e]) == 1
    steps = [e for e in trainer.state.log_history if "critic/value_loss" in e]
    assert len(steps) == 2 and all("value/clip_frac" in e for e in steps)
    assert trainer.model.active_adapter == "default"


def test_critic_values_shared_base_and_negative_control(tiny_model_dir, tmp_path):
    """The critic adapter changes values but not the policy's logits; disabling it is caught."""
    from rlplug.trl.critic import critic_values

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = make_trainer(model, tokenizer, tmp_path)
    peft_model = trainer.model
    batch = tokenizer(["1+2+3=45", "9+9+9=27"], return_tensors="pt", padding=True)
    with torch.no_grad():
        policy_logits = peft_model(**batch).logits
        torch.nn.init.normal_(peft_model.rlplug_value_head.weight)
        before = critic_values(peft_model, batch["input_ids"], batch["attention_mask"], 2)
        for name, p in peft_model.named_parameters():
            if ".critic." in name and "lora_B" in name:
                p.add_(0.5)
        after = critic_values(peft_model, batch["input_ids"], batch["attention_mask"], 2)
        assert before.shape == (2, 2)
        assert not torch.allclose(before, after), "the critic adapter is not in the critic's forward"
        assert torch.equal(peft_model(**batch).logits, policy_logits), "the critic adapter leaked into the policy"


def test_a2c_and_ppo_ptx_run(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    a2c = make_trainer(model, tokenizer, tmp_path / "a2c", algorithm="a2c")
    assert a2c.args.num_iterations == 1 and a2c.value_loss.name == "mse_value"
    a2c.train()
    assert a2c.state.global_step == 2
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(ValueError, match="ptx_dataset"):
        make_trainer(model, tokenizer, tmp_path / "ptx", algorithm="ppo_ptx")
    ptx_data = Dataset.from_list([{"text": "1+2+3=6"}, {"text": "4+4+1=9"}])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ptx = make_trainer(model, tokenizer, tmp_path / "ptx", algorithm="ppo_ptx", trainer_inputs={"ptx_dataset": ptx_data})
    assert ptx.args.ptx_coef == 0.1
    ptx.train()
    assert len([e for e in ptx.state.log_history if "ptx/log_likelihood" in e]) == 2
