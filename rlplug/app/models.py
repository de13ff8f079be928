"""Model loading for ``rlplug train``: from_pretrained, LoRA and QLoRA.

The model and the LoRA config are handed to TRL, which wraps the model with PEFT. Under
PEFT the reference policy is the base model with the adapter disabled, so no second copy
of the weights is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlplug.app.config import ConfigError, ModelArguments

ALL_LINEAR = "all-linear"


def torch_dtype(name: str) -> torch.dtype | str:
    """``"auto"`` or the torch dtype of that name."""
    return name if name == "auto" else getattr(torch, name)


def quantization_config(args: ModelArguments) -> Any:
    """A BitsAndBytesConfig for ``quantization`` 4bit (nf4, double quantization) or 8bit, else None."""
    if args.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if args.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute_dtype = torch.bfloat16 if args.dtype == "auto" else torch_dtype(args.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=args.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def lora_config(args: ModelArguments) -> Any:
    """PEFT's LoraConfig from the model part, or None for full fine-tuning."""
    if not args.lora:
        return None
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check_local_path(name_or_path: str) -> None:
    """A name that can only be a local path (hub ids are ``name`` or ``owner/name``) must exist."""
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise ConfigError(f"model_name_or_path: no such directory {name_or_path!r}")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer, left-padded (for generation), with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    args: ModelArguments,
    *,
    trust_remote_code: bool = False,
    model_init_kwargs: dict[str, Any] | None = None,
) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with dtype and quantization from the model part.

    A quantized model is prepared for k-bit training (norms in fp32, base frozen). Gradient
    checkpointing is left to TRL's config, which enables it and the input gradients PEFT needs.
    """
    from transformers import AutoModelForCausalLM

    _check_local_path(name_or_path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(args.dtype), "trust_remote_code": trust_remote_code}
    if args.attn_implementation is not None:
        kwargs["attn_implementation"] = args.attn_implementation
    quantization = quantization_config(args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if torch.cuda.is_available():
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    kwargs.update(model_init_kwargs or {})
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_4bit_layers_differentiable(model)
    return model


def keep_4bit_layers_differentiable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weight the first
    time the layer runs in eval mode without gradients (as in generation or evaluation),
    and from then on uses a kernel with no autograd: later training forwards silently
    lose the gradient through the frozen base layer, so earlier LoRA layers get wrong
    gradients. Keeping the flag off keeps the differentiable path. No effect on GPU.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@dataclass
class Policy:
    """What the trainer gets: the model (not yet wrapped), its tokenizer, and the LoRA config."""

    model: Any
    tokenizer: Any
    peft_config: Any


def load_policy(
    name_or_path: str,
    args: ModelArguments,
    *,
    trust_remote_code: bool = False,
    model_init_kwargs: dict[str, Any] | None = None,
) -> Policy:
    """Model, tokenizer and LoRA config for ``name_or_path`` (a hub id or a local directory)."""
    model = load_model(name_or_path, args, trust_remote_code=trust_remote_code, model_init_kwargs=model_init_kwargs)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    return Policy(model=model, tokenizer=tokenizer, peft_config=lora_config(args))
