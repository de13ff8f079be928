"""RLOO's policy loss and its aggregation: one ratio and one loss term per sequence."""

from __future__ import annotations

import torch

from rlplug import AggregationContext
from rlplug import clipped_surrogate


def sequence_ratio_clip(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate on the sequence ratio of summed log-probs; one term per sequence.

    rho_i = exp(sum_t log pi_t - sum_t log pi_old_t) over the masked tokens, and
    l_i = -min(rho_i A_i, clip(rho_i, 1 - eps_low, 1 + eps_high) A_i). The ratio is that of
    the whole sequence's probability (not length-normalized, unlike ``gspo_clip``), as in
    TRL's RLOOTrainer (Ahmadian et al. 2024, arXiv:2402.14740, with PPO's clip, Schulman et
    al. 2017). ``advantages`` must be per sequence, (B, 1). Returns a (B, 1) loss; same
    operations, in the same order, as TRL 1.16's RLOOTrainer.
    """
    if advantages.dim() != 2 or advantages.shape[1] != 1:
        raise ValueError(
            f"sequence_ratio_clip needs one advantage per sequence, (B, 1); got {tuple(advantages.shape)}. "
            "Choose an outcome advantage estimator (e.g. rloo) or a per-token policy loss."
        )
    sequence_logps = (logps * mask).sum(1, keepdim=True)
    old_sequence_logps = (old_logps * mask).sum(1, keepdim=True)
    ratio = torch.exp(sequence_logps - old_sequence_logps)
    return clipped_surrogate(ratio, advantages, epsilon, epsilon_high)


def sequence_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
    """Mean over sequences of each sequence's loss: (1/B) sum_i l_i, divided for accumulation.

    A per-sequence loss (B, 1) is averaged as is; a per-token loss (B, T) is first summed
    over each sequence's masked tokens (sum_t l_it, the REINFORCE form of a sequence loss).
    TRL's RLOOTrainer returns ``mean`` unscaled and lets the Trainer divide by the
    gradient-accumulation steps; here the same division happens inside, in the same order
    (mean, then divide), because rlplug's online adapter returns losses already scaled.
    """
    if per_token_loss.shape[1] != 1:
        per_token_loss = (per_token_loss * mask).sum(-1)
    return per_token_loss.mean() / ctx.gradient_accumulation_steps
