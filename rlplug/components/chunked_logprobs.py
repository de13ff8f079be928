"""Per-token log-probabilities through the LM head, chunk by chunk over tokens.

For hidden states ``h`` ``[N, H]``, an LM head ``W`` ``[V, H]`` (bias ``b``) and targets
``y`` ``[N]``, with the model's logit transform (scale ``s``, optional soft-cap ``c``) and
the sampling temperature ``tau``:

    z_n      = transform(h_n W^T + b) / tau,   transform(x) = c * tanh(s x / c)  (or s x)
    logp_n   = z_{n, y_n} - logsumexp_v z_{n, v}
    H_n      = -sum_v p_{n,v} log p_{n,v}                     (entropy)

This is the log-softmax-and-gather of every policy-gradient and preference loss (e.g.
Shao et al. 2024, DeepSeekMath/GRPO, arXiv:2402.03300; Rafailov et al. 2023, DPO,
arXiv:2305.18290). Computed naively it holds the ``[N, V]`` logits (4·N·V bytes in fp32:
2.5 GB for 8x512 tokens at V=152k) in the forward and again in the backward. Here the
tokens are taken ``chunk_size`` at a time: the forward keeps only per-token results, and
the backward recomputes each chunk's logits and back-propagates through them before the
next chunk (activation checkpointing per chunk, Chen et al. 2016, arXiv:1604.06174), so
the peak is O(chunk_size·V) both ways. Each chunk runs exactly the unchunked formula, so
the results equal the unchunked ones up to the summation order of the weight gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadTransform:
    """How a model turns ``h W^T + b`` into the logits it samples from.

    ``logit_scale`` multiplies the projection (Cohere, Granite's ``1/logits_scaling``);
    ``softcap`` is Gemma 2's ``final_logit_softcapping``; ``temperature`` divides the
    result, as TRL divides the logits by the generation temperature.
    """

    temperature: float = 1.0
    logit_scale: float = 1.0
    softcap: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.softcap is not None and not self.softcap > 0:
            raise ValueError(f"softcap must be positive or None, got {self.softcap}")


@dataclass(frozen=True)
class TokenLogProbs:
    """Per-token results, each ``[N]``.

    ``log_probs`` and ``entropy`` carry gradients; ``mean_logits`` (mean transformed logit over
    the vocabulary), ``is_top1`` (target is the first argmax) and ``log_sum_sq_probs``
    (``log sum_v p_v^2``) are for metrics and carry none.
    """

    log_probs: torch.Tensor
    entropy: torch.Tensor
    mean_logits: torch.Tensor
    is_top1: torch.Tensor
    log_sum_sq_probs: torch.Tensor


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                transform: HeadTransform) -> torch.Tensor:
    """The transformed logits ``[n, V]`` of ``hidden`` ``[n, H]`` (the unchunked formula)."""
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in fp32, as TRL's fused head
    if transform.logit_scale != 1.0:
        logits = logits * transform.logit_scale
    if transform.softcap is not None:
        logits = transform.softcap * torch.tanh(logits / transform.softcap)
    if transform.temperature != 1.0:
        logits = logits / transform.temperature
    return logits


def _differentiable(hidden, weight, bias, targets, transform):
    logits = head_logits(hidden, weight, bias, transform)
    logps_all = torch.log_softmax(logits, dim=-1)
    log_probs = logps_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logps_all.exp() * logps_all).sum(-1)
    return log_probs, entropy, logits, logps_all


def _metrics(logits: torch.Tensor, logps_all: torch.Tensor, targets: torch.Tensor):
    with torch.no_grad():
        # argmax returns the first maximum: a tie with an earlier token is not a top-1 hit (as TRL)
        is_top1 = logits.argmax(-1) == targets
        return logits.mean(-1), is_top1, torch.logsumexp(2 * logps_all, dim=-1)


def unchunked_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             targets: torch.Tensor, transform: HeadTransform = HeadTransform()) -> TokenLogProbs:
    """The reference: all ``[N, V]`` logits at once, differentiated by autograd."""
    log_probs, entropy, logits, logps_all = _differentiable(hidden, weight, bias, targets, transform)
    return TokenLogProbs(log_probs, entropy, *_metrics(logits.detach(), logps_all.detach(), targets))


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, transform, chunk_size):
        ctx.set_materialize_grads(False)
        outputs = [[] for _ in range(5)]
        with torch.no_grad():
            for start in range(0, hidden.shape[0], chunk_size):
                h, y = hidden[start:start + chunk_size], targets[start:start + chunk_size]
                log_probs, entropy, logits, logps_all = _differentiable(h, weight, bias, y, transform)
                for bucket, value in zip(outputs, (log_probs, entropy, *_metrics(logits, logps_all, y))):
                    bucket.append(value)
                del logits, logps_all
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.transform, ctx.chunk_size = transform, chunk_size
        results = [torch.cat(bucket) for bucket in outputs]
        ctx.mark_non_differentiable(*results[2:])
        return tuple(results)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, bias, targets = ctx.saved_tensors
        wants_hidden, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if wants_hidden else None
        # accumulated over chunks in at least fp32, as TRL's chunked head does
        grad_weight = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) if wants_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.promote_types(bias.dtype, torch.float32)) if wants_bias else None
        weight_leaf = weight.detach().requires_grad_(wants_weight)
        bias_leaf = None if bias is None else bias.detach().requires_grad_(wants_bias)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            h = hidden[start:end].detach().requires_grad_(wants_hidden)
            with torch.enable_grad():
                log_probs, entropy, _, _ = _differentiable(h, weight_leaf, bias_leaf, targets[start:end], ctx.transform)
            pairs = [(out, grad[start:end]) for out, grad in ((log_probs, grad_log_probs), (entropy, grad_entropy))
                     if grad is not None]
            leaves = [(leaf, acc) for leaf, acc, wanted in ((h, grad_hidden, wants_hidden),
                                                          (weight_leaf, grad_weight, wants_weight),
                                                          (bias_leaf, grad_bias, wants_bias)) if wanted]
            if not pairs or not leaves:
                continue
            grads = torch.autograd.grad([out for out, _ in pairs], [leaf for leaf, _ in leaves],
                                        [grad for _, grad in pairs])
            for (leaf, acc), grad in zip(leaves, grads):
                if leaf is h:
                    acc[start:end] = grad
                else:
                    acc += grad
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None)


def chunked_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           targets: torch.Tensor, transform: HeadTransform = HeadTransform(),
                           chunk_size: int = 128) -> TokenLogProbs:
    """Per-token log-probs and entropies of ``targets`` (see the module docstring), with peak
    memory O(chunk_size·V) in forward and backward. ``hidden`` ``[N, H]``, ``targets`` ``[N]``."""
    if chunk_size < 1:
        raise ValueError(f"logprob_chunk_size must be a positive number of tokens, got {chunk_size}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be [N, H] and targets [N]; got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    return TokenLogProbs(*_ChunkedHead.apply(hidden, weight, bias, targets, transform, chunk_size))
