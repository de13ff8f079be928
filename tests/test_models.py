"""Model loading: LoRA on all linear layers, QLoRA, and the reference shared under PEFT."""

import gc

import pytest
import torch
from transformers import LlamaForCausalLM

from rlplug import build_trainer
from rlplug.app.config import ConfigError, ModelArguments
from rlplug.app.models import load_model, load_policy, lora_config, quantization_config
from rlplug.demo import arithmetic

# The tiny model: vocab 20 (3 special + 17 characters), hidden 64, MLP 256, 2 layers, untied head.
BASE_PARAMETERS = 20 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64) + 64 + 64 * 20  # = 133,952
# LoRA r=16 on q,k,v,o (64->64), gate, up (64->256) and down (256->64), in both layers.
LORA_PARAMETERS = 2 * 16 * (4 * (64 + 64) + 3 * (64 + 256))  # = 47,104


def _live_llamas() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, LlamaForCausalLM))


def _trainer(model_dir, tmp_path, model_args):
    policy = load_policy(model_dir, model_args)
    return build_trainer(
        "grpo", model=policy.model, processing_class=policy.tokenizer, peft_config=policy.peft_config,
        reward_funcs=["arithmetic_exact_match"], train_dataset=arithmetic.train_dataset(),
        kl={"coef": 0.04},  # beta > 0: a reference policy is needed
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=8, max_completion_length=4,
        bf16=False, activation_checkpointing=False, report_to="none",
    )


def test_parameter_counts_are_what_the_formulas_say(tiny_model_dir):
    assert BASE_PARAMETERS == 133_952 and LORA_PARAMETERS == 47_104
    model = load_model(tiny_model_dir, ModelArguments())
    assert sum(p.numel() for p in model.parameters()) == BASE_PARAMETERS


def test_lora_reference_is_the_base_with_the_adapter_disabled(tiny_model_dir, tmp_path):
    before = _live_llamas()
    trainer = _trainer(tiny_model_dir, tmp_path, ModelArguments())
    assert trainer.ref_model is None
    assert trainer.beta == 0.04 and trainer.components.kl.active
    # One copy of the weights in the whole process: the policy, with the adapter on top.
    assert _live_llamas() - before == 1
    parameters = list(trainer.model.parameters())
    assert sum(p.numel() for p in parameters) == BASE_PARAMETERS + LORA_PARAMETERS
    assert sum(p.numel() for p in parameters if p.requires_grad) == LORA_PARAMETERS

    # The reference TRL uses (adapter disabled) is the base model exactly, even after the adapter moved.
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    base = load_model(tiny_model_dir, ModelArguments())
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
        with trainer.model.disable_adapter():
            reference_logits = trainer.model(input_ids=ids).logits
        policy_logits = trainer.model(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    assert torch.equal(reference_logits, base_logits)
    assert not torch.allclose(policy_logits, base_logits, atol=1e-3)


def test_negative_control_full_fine_tuning_holds_a_second_copy(tiny_model_dir, tmp_path):
    """Without LoRA, TRL loads a reference model: the same count catches a second copy."""
    before = _live_llamas()
    trainer = _trainer(tiny_model_dir, tmp_path, ModelArguments(lora=False))
    assert trainer.ref_model is not None
    assert _live_llamas() - before == 2
    assert sum(p.numel() for p in trainer.ref_model.parameters()) == BASE_PARAMETERS


def test_lora_targets_all_linear_layers_but_the_output(tiny_model_dir):
    config = lora_config(ModelArguments())
    assert (config.r, config.lora_alpha, config.lora_dropout, config.target_modules) == (16, 32, 0.0, "all-linear")
    from peft import get_peft_model

    model = get_peft_model(load_model(tiny_model_dir, ModelArguments()), config)
    adapted = sorted({name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")})
    assert adapted == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A")) == 14
    assert not hasattr(model.get_base_model().lm_head, "lora_A")
    assert lora_config(ModelArguments(lora_target_modules=["q_proj"])).target_modules == {"q_proj"}
    assert lora_config(ModelArguments(lora=False)) is None


def test_quantization_configs():
    assert quantization_config(ModelArguments()) is None
    four = quantization_config(ModelArguments(quantization="4bit"))
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16  # dtype auto
    assert quantization_config(ModelArguments(quantization="4bit", dtype="float32")).bnb_4bit_compute_dtype == torch.float32
    assert quantization_config(ModelArguments(quantization="8bit")).load_in_8bit


def test_qlora_model_is_4bit_and_frozen(tiny_model_dir):
    import bitsandbytes as bnb

    model = load_model(tiny_model_dir, ModelArguments(quantization="4bit", dtype="float32"))
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_type == "nf4"
    assert q_proj.weight.quant_state.nested  # double quantization
    assert not any(p.requires_grad for p in model.parameters())
    assert model.model.norm.weight.dtype == torch.float32


def _lora_gradients(model_dir, evaluate_first: bool, keep_differentiable: bool):
    from bitsandbytes.nn import Linear4bit
    from peft import get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(model_dir, ModelArguments(quantization="4bit", dtype="float32")), lora_config(ModelArguments()))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    if not keep_differentiable:  # bitsandbytes' own default on this CPU
        for module in model.modules():
            if isinstance(module, Linear4bit):
                module.support_avx512bf16_for_cpu = True
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    if evaluate_first:  # what generation / held-out evaluation does
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    model(input_ids=ids).logits.sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_qlora_gradients_survive_an_evaluation_pass(tiny_model_dir):
    from bitsandbytes.nn.modules import has_avx512bf16

    clean = _lora_gradients(tiny_model_dir, evaluate_first=False, keep_differentiable=True)
    after_eval = _lora_gradients(tiny_model_dir, evaluate_first=True, keep_differentiable=True)
    assert clean.keys() == after_eval.keys() and len(clean) == 28
    assert all(torch.equal(clean[name], after_eval[name]) for name in clean)
    if has_avx512bf16():
        # Negative control (on CPUs where bitsandbytes would repack): without the fix, layer 0's
        # LoRA gradient loses the path through the frozen 4-bit layers above it.
        broken = _lora_gradients(tiny_model_dir, evaluate_first=True, keep_differentiable=False)
        name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
        assert (broken[name] - clean[name]).abs().max() > 1e-2


def test_missing_local_model_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model_name_or_path: no such directory"):
        load_model(str(tmp_path / "nope"), ModelArguments())
