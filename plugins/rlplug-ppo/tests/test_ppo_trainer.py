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
    from rlplug.trl.critic import critic_active, critic_values

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = make_trainer(model, tokenizer, tmp_path)
    peft_model = trainer.model
    batch = tokenizer(["1+2+3=45", "9+9+9=27"], return_tensors="pt", padding=True)
    with torch.no_grad():
        policy_logits = peft_model(**batch).logits
        torch.nn.init.normal_(peft_model.rlplug_value_head.weight)
        with critic_active(peft_model):
            before = critic_values(peft_model, batch["input_ids"], batch["attention_mask"], 2)
        for name, p in peft_model.named_parameters():
            if ".critic." in name and "lora_B" in name:
                p.add_(0.5)
        with critic_active(peft_model):
            after = critic_values(peft_model, batch["input_ids"], batch["attention_mask"], 2)
        with pytest.raises(RuntimeError, match="critic_active"):
            critic_values(peft_model, batch["input_ids"], batch["attention_mask"], 2)
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


def base_numel(model: Any) -> int:
    """Elements of the distinct storages of the frozen (base) weights."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.data_ptr() not in seen:
            seen.add(parameter.data_ptr())
            total += parameter.numel()
    return total


def test_qlora_ppo_holds_one_quantized_base(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    def quantized() -> Any:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.float32)
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=config, dtype=torch.float32,
                                                    device_map="cpu")

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reference = quantized()
    model = prepare_model_for_kbit_training(quantized(), use_gradient_checkpointing=False)
    trainer = make_trainer(model, tokenizer, tmp_path)
    trainer.train()
    assert trainer.state.global_step == 2
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == len([m for m in reference.modules() if isinstance(m, bnb.nn.Linear4bit)]) > 0
    assert all(".critic." not in n or "lora_" in n for n, _ in trainer.model.named_parameters())
    # Each 4-bit layer carries both adapters over its single base weight.
    assert all({"default", "critic"} <= set(m.lora_A.keys()) for m in trainer.model.modules() if hasattr(m, "lora_A")
               and isinstance(getattr(m, "base_layer", None), bnb.nn.Linear4bit))
    assert base_numel(trainer.model) == sum(p.numel() for p in reference.parameters())
    # Negative control: a separate critic model (the alternative design) is caught by the count.
    import copy
    doubled = torch.nn.ModuleList([trainer.model, copy.deepcopy(trainer.model.get_base_model())])
    assert base_numel(doubled) > base_numel(trainer.model)


def test_resume_restores_the_critic_bitwise(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def run(output: Path, max_steps: int, resume: str | None = None) -> Any:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        trainer = make_trainer(model, tokenizer, output, max_steps=max_steps, num_iterations=1,
                               save_strategy="steps", save_steps=1)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tmp_path / "straight", 2)
    checkpoint = tmp_path / "straight" / "checkpoint-1"
    assert (checkpoint / "rlplug_critic.pt").is_file()
    resumed = run(tmp_path / "resumed", 2, resume=str(checkpoint))
    straight_params = dict(straight.model.named_parameters())
    trained = [n for n, _ in resumed.model.named_parameters() if "lora_" in n or "value_head" in n]
    assert any(".critic." in n for n in trained) and "rlplug_value_head.weight" in trained
    for name in trained:
        assert torch.equal(resumed.model.get_parameter(name), straight_params[name]), name
    # Negative controls: a checkpoint whose critic was not saved is refused; one with a wrong
    # critic (value head zeroed) resumes to different weights, which the comparison catches.
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "rlplug_critic.pt").unlink()
    with pytest.raises(FileNotFoundError, match="critic"):
        run(tmp_path / "refused", 2, resume=str(broken))
    state = torch.load(checkpoint / "rlplug_critic.pt")
    state["rlplug_value_head.weight"].zero_()
    torch.save(state, broken / "rlplug_critic.pt")
    wrong = run(tmp_path / "wrong", 2, resume=str(broken))
    assert not torch.equal(wrong.model.rlplug_value_head.weight, straight.model.rlplug_value_head.weight)
