"""rlplug's token-chunked LM head inside TRL's trainers.

TRL 1.16 patches every trainer's policy and reference with a fused LM head
(``trl.trainer.utils.add_fused_lm_head``): ``model(..., labels=..., fused_lm_head=True)``
runs the backbone once and returns per-token log-probs without the ``[tokens, V]`` logits.
On CUDA/XPU its Triton kernels do this in small tiles. Elsewhere (CPU) the tiles are
``4096 tokens x 32768 vocabulary`` entries folded with torch ops: half a gigabyte per tile
and several temporaries of that size, i.e. the whole ``[B·T, 32768]`` slab for a batch of
8x512 tokens. rlplug wraps that forward: on devices where TRL runs its Triton kernels, or
for MoE models (router aux loss), TRL's forward runs unchanged; elsewhere the backbone runs
once and ``rlplug.components.chunked_logprobs`` scores ``logprob_chunk_size`` tokens at a
time against the full vocabulary, recomputing each chunk in backward.

Every pass TRL makes through ``fused_lm_head=True`` goes through it: the policy, the
old-policy and reference log-probs, the KTO KL pass, for the online, paired and unpaired
adapters alike.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
import transformers
from accelerate.utils import is_peft_model
from packaging.version import Version
from transformers.utils import is_triton_available
from trl.trainer.utils import FusedCausalLMOutput

from rlplug.components.chunked_logprobs import HeadTransform, chunked_token_logprobs

# Tokens per chunk when the switch is "auto": 128 x 152k (Qwen2.5) fp32 logits = 78 MB per chunk.
DEFAULT_LOGPROB_CHUNK_SIZE = 128
# "auto" chunks when the vocabulary has at least this many entries (Llama 2's 32000 is just below;
# Llama 3 128k, Qwen2.5 152k, Gemma 256k are above).
AUTO_MIN_VOCAB = 32768


def resolve_chunk_size(setting: int | str | None, vocab_size: int) -> int | None:
    """Tokens per chunk for ``logprob_chunk_size``, or None for TRL's own head.

    ``"auto"``: :data:`DEFAULT_LOGPROB_CHUNK_SIZE` when ``vocab_size >= AUTO_MIN_VOCAB``, else off;
    ``0`` or ``None``: off; a positive integer: that many tokens per chunk.
    """
    if setting == "auto":
        return DEFAULT_LOGPROB_CHUNK_SIZE if vocab_size >= AUTO_MIN_VOCAB else None
    if setting is None or setting == 0:
        return None
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"logprob_chunk_size must be 'auto', 0 (off) or a positive number of tokens, got {setting!r}")
    return setting


def head_transform(config: Any, temperature: float) -> HeadTransform:
    """The logit scale and soft-cap a model applies, read from its config as TRL's fused head reads them."""
    text_config = config.get_text_config()
    scale = getattr(text_config, "logit_scale", None)
    if scale is None:
        scale = getattr(text_config, "output_multiplier", None)
    if scale is None:
        scale = getattr(text_config, "lm_head_multiplier", None)
    if scale is None and getattr(text_config, "logits_scaling", None) is not None:
        scaling = text_config.logits_scaling
        scale = scaling if text_config.model_type == "hyperclovax" else 1 / scaling
    return HeadTransform(
        temperature=float(temperature),
        logit_scale=1.0 if scale is None else float(scale),
        softcap=getattr(text_config, "final_logit_softcapping", None),
    )


def _trl_runs_triton(device: torch.device) -> bool:
    return is_triton_available() and device.type in ("cuda", "xpu")


def add_token_chunked_head(model: Any, temperature: float, chunk_size: int) -> None:
    """Wrap the TRL-patched ``model.forward`` so that ``fused_lm_head=True`` uses the token-chunked head.

    ``model`` is the transformers model TRL patched (under PEFT, the base model). Outputs are
    TRL's ``FusedCausalLMOutput``, every field computed, zero where the label is -100.
    """
    trl_forward = model.forward
    text_config = model.config.get_text_config()
    transform = head_transform(model.config, temperature)
    backbone_attr = "base_model"
    if text_config is not model.config and Version(transformers.__version__) < Version("5.0.0"):
        backbone_attr = "model"

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        lm_head = self.get_output_embeddings()
        moe = kwargs.get("output_router_logits") or getattr(text_config, "output_router_logits", False)
        if not fused_lm_head or moe or _trl_runs_triton(lm_head.weight.device):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = getattr(self, backbone_attr)(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, targets = hidden[:, :-1], labels[:, 1:]
        else:
            targets = shift_labels
        hidden, targets = hidden.to(lm_head.weight.device), targets.to(lm_head.weight.device)
        mask = targets != -100
        scored = chunked_token_logprobs(hidden[mask], lm_head.weight, lm_head.bias, targets[mask], transform,
                                        chunk_size)
        # masked_scatter keeps an all-masked batch connected to the model (a differentiable zero), as TRL
        log_probs, entropy, mean_logits, is_top1, log_sum_sq_probs = (
            value.new_zeros(mask.shape).masked_scatter(mask, value)
            for value in (scored.log_probs, scored.entropy, scored.mean_logits, scored.is_top1,
                          scored.log_sum_sq_probs)
        )
        normalizer = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / normalizer, log_probs=log_probs, entropy=entropy,
            log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits, is_top1=is_top1, label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)


def install_chunked_heads(trainer: Any, temperature: float, setting: int | str | None) -> int | None:
    """Chunk the log-probs of ``trainer``'s policy and reference (see the module docstring).

    Call after TRL's ``__init__`` (which adds its fused head). Returns the chunk size in force,
    or None when TRL's head is kept.
    """
    policy = trainer.model.get_base_model() if is_peft_model(trainer.model) else trainer.model
    chunk_size = resolve_chunk_size(setting, policy.get_output_embeddings().weight.shape[0])
    if chunk_size is None:
        return None
    add_token_chunked_head(policy, temperature, chunk_size)
    if getattr(trainer, "ref_model", None) is not None:
        add_token_chunked_head(trainer.ref_model, temperature, chunk_size)
    return chunk_size
