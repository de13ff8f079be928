"""Loss aggregations: how a per-token loss becomes the scalar that is differentiated.

Each returns the loss already divided for gradient accumulation, as TRL's GRPOTrainer
does (``loss_is_scaled_for_ga``), in the same operation order so results match bitwise.
"""

from __future__ import annotations

import torch

from rlplug.core.aggregation import AggregationContext


def sequence_mean_token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Mean over sequences of each sequence's token mean: (1/B) sum_i (1/|o_i|) sum_t l_it.

    GRPO as published (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300); TRL ``loss_type="grpo"``.
    Biased toward short sequences (Liu et al. 2025, Dr.GRPO).
    """
    loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return loss / ctx.gradient_accumulation_steps


def local_token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Token mean over this micro-batch: sum_it l_it / sum_it m_it.

    BNPO-style batch normalization; TRL ``loss_type="bnpo"``.
    """
    loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    return loss / ctx.gradient_accumulation_steps


def constant_normalizer(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Sum divided by a constant: sum_it l_it / (B * L_max).

    Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783);
    TRL ``loss_type="dr_grpo"``. No length bias.
    """
    loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * ctx.max_completion_length)
    return loss / ctx.gradient_accumulation_steps


def global_token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Token-level mean over the whole generation batch: sum_it l_it / N_tokens(global).

    DAPO (Yu et al. 2025, arXiv:2503.14476); TRL ``loss_type="dapo"``. The global token
    count is shared across processes and accumulation steps, so every token weighs the same.
    """
    if ctx.num_items_in_batch is None:
        raise ValueError("global_token_mean needs num_items_in_batch in the aggregation context")
    normalizer = ctx.num_items_in_batch.clamp(min=1.0) / ctx.num_processes
    if ctx.training:
        normalizer = normalizer * ctx.gradient_accumulation_steps / ctx.steps_per_generation
    return (per_token_loss * mask).sum() / normalizer


def sequence_sum_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Mean over sequences of each sequence's token sum: (1/B) sum_i sum_t l_it.

    LUSPO (Length-Unbiased Sequence Policy Optimization, arXiv:2602.05261); TRL ``loss_type="luspo"``.
    With a sequence-level loss l_i (B, 1) this is (1/B) sum_i |o_i| l_i: each sequence weighted
    by its length, which removes GSPO's bias toward short sequences.
    """
    loss = (per_token_loss * mask).sum(-1).mean()
    return loss / ctx.gradient_accumulation_steps
