"""A memory estimate printed before training, so a user sees whether a configuration fits.

Four terms, in bytes:

- weights: every parameter and buffer as stored (4-bit weights count their packed bytes);
- trainable: each trainable parameter in fp32 with its gradient and AdamW's two moments,
  16 bytes per parameter (LoRA adapters, or the whole model in full fine-tuning);
- log-prob logits: one chunk of fp32 logits, ``rows x columns x 4``; the backward holds
  about :data:`LIVE_LOGIT_COPIES` such buffers at once (logits, log-softmax, softmax,
  gradient). rlplug's chunked head: ``logprob_chunk_size x V``; TRL's fused head: tiles of
  ``min(tokens, 4096) x min(V, 32768)``;
- generation (online only): the KV cache, ``2 x layers x kv_heads x head_dim x
  sequences x (prompt + completion) x dtype bytes``, plus one step's fp32 logits
  ``sequences x V x 4``.

Activations of the model body are not included (they depend on the attention kernel and
on gradient checkpointing), so the sum is a floor, not a bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LIVE_LOGIT_COPIES = 4
TRAINABLE_BYTES_PER_PARAM = 16  # fp32 weight + fp32 gradient + two fp32 AdamW moments
TRL_TILE_TOKENS, TRL_TILE_VOCAB = 4096, 32768  # trl.kernels.chunked_logprob
ASSUMED_PROMPT_TOKENS = 256
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    trainable: int
    logits_per_chunk: int
    generation: int

    @property
    def total(self) -> int:
        """Weights + trainable state + the live logit buffers + generation."""
        return self.weights + self.trainable + LIVE_LOGIT_COPIES * self.logits_per_chunk + self.generation


def estimate_memory(
    *, weight_bytes: int, trainable_params: int, vocab_size: int, tokens_per_pass: int, chunk_size: int | None,
    num_layers: int = 0, num_kv_heads: int = 0, head_dim: int = 0, generation_sequences: int = 0,
    generation_tokens: int = 0, cache_dtype_bytes: int = 2,
) -> MemoryEstimate:
    """The terms of the module docstring. ``chunk_size`` None: TRL's fused-head tiles."""
    if chunk_size is None:
        rows, columns = min(tokens_per_pass, TRL_TILE_TOKENS), min(vocab_size, TRL_TILE_VOCAB)
    else:
        rows, columns = min(tokens_per_pass, chunk_size), vocab_size
    kv_cache = 2 * num_layers * num_kv_heads * head_dim * generation_sequences * generation_tokens * cache_dtype_bytes
    generation = kv_cache + (generation_sequences * vocab_size * 4 if generation_sequences else 0)
    return MemoryEstimate(
        weights=weight_bytes,
        trainable=TRAINABLE_BYTES_PER_PARAM * trainable_params,
        logits_per_chunk=rows * columns * 4,
        generation=generation,
    )


def _prompt_tokens(trainer: Any) -> tuple[int, bool]:
    """The longest tokenized text prompt among the first rows, or an assumed length."""
    dataset, tokenizer = getattr(trainer, "train_dataset", None), getattr(trainer, "processing_class", None)
    try:
        prompts = [row["prompt"] for row in dataset.select(range(min(64, len(dataset))))]
        if prompts and all(isinstance(p, str) for p in prompts):
            return max(len(tokenizer(p)["input_ids"]) for p in prompts), False
    except (AttributeError, KeyError, TypeError):
        pass
    return ASSUMED_PROMPT_TOKENS, True


def trainer_memory_estimate(trainer: Any) -> tuple[MemoryEstimate, str]:
    """The estimate for a built rlplug trainer, and a one-line description of its inputs."""
    model, args = trainer.model, trainer.args
    config = model.config.get_text_config()
    vocab = model.get_output_embeddings().weight.shape[0]
    weight_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = args.per_device_train_batch_size
    chunk = getattr(trainer, "logprob_chunk_size", None)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    shape = dict(num_layers=config.num_hidden_layers, num_kv_heads=getattr(config, "num_key_value_heads", heads) or heads,
                 head_dim=head_dim)
    completion = getattr(args, "max_completion_length", None)
    if hasattr(trainer, "reward_funcs") and completion:
        prompt, assumed = _prompt_tokens(trainer)
        sequences = getattr(args, "generation_batch_size", None) or batch
        estimate = estimate_memory(
            weight_bytes=weight_bytes, trainable_params=trainable, vocab_size=vocab,
            tokens_per_pass=batch * (prompt + completion), chunk_size=chunk, generation_sequences=sequences,
            generation_tokens=prompt + completion, **shape,
        )
        detail = f"{sequences} x ({prompt}{' assumed' if assumed else ''} + {completion}) generated tokens"
    else:
        length = getattr(args, "max_length", None) or 1024
        estimate = estimate_memory(weight_bytes=weight_bytes, trainable_params=trainable, vocab_size=vocab,
                                   tokens_per_pass=2 * batch * length, chunk_size=chunk, **shape)
        detail = f"up to {2 * batch} x {length} tokens per pass"
    return estimate, detail


def describe_memory(estimate: MemoryEstimate, chunk_size: int | None, detail: str) -> str:
    head = f"chunks of {chunk_size} tokens" if chunk_size else "TRL's fused-head tiles"
    return (
        f"rlplug: memory estimate: weights {estimate.weights / GIB:.2f} GiB, trainable + grads + AdamW "
        f"{estimate.trainable / GIB:.2f} GiB, log-prob logits {estimate.logits_per_chunk / GIB:.3f} GiB per chunk "
        f"({head}; x{LIVE_LOGIT_COPIES} live in backward), generation {estimate.generation / GIB:.2f} GiB; "
        f"about {estimate.total / GIB:.2f} GiB plus activations ({detail})"
    )


def memory_line(trainer: Any) -> str:
    """What ``rlplug train`` prints before training."""
    estimate, detail = trainer_memory_estimate(trainer)
    return describe_memory(estimate, getattr(trainer, "logprob_chunk_size", None), detail)
