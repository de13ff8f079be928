"""From per-token log-probs of a [chosen; rejected] batch to what a paired loss reads. Pure tensor code."""

from __future__ import annotations

import torch


def ld_sequence_logps(per_token_logps: torch.Tensor, shift_mask: torch.Tensor, ld_alpha: float | None) -> torch.Tensor:
    """Sequence log-probs (2B,) of a batch laid out as [chosen; rejected].

    ``ld_alpha=None``: the plain sum over completion tokens (prompt positions hold 0).
    Otherwise LD-DPO (Liu et al., 2024, "Length Desensitization in Directed Preference
    Optimization", Eq. 9): with l_s = min(|y_w|, |y_l|) the shared length of each pair,

        log pi(y|x) = sum_{t <= l_s} log pi(y_t|.) + ld_alpha * sum_{t > l_s} log pi(y_t|.),

    so the tokens past the shorter completion count ``ld_alpha`` times. Mirrors TRL's
    DPOTrainer (``ld_alpha``) operation for operation.
    """
    if ld_alpha is None:
        return per_token_logps.sum(dim=1)
    positions = shift_mask.cumsum(dim=1)
    chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).long().chunk(2, dim=0)
    shared = torch.minimum(chosen_lengths, rejected_lengths)
    shared = torch.cat([shared, shared], dim=0).to(per_token_logps.device)
    shared_mask = (positions > 0) & (positions <= shared.unsqueeze(1))
    tail_mask = positions > shared.unsqueeze(1)
    return (per_token_logps * shared_mask).sum(dim=1) + ld_alpha * (per_token_logps * tail_mask).sum(dim=1)


def wpo_pair_weights(
    per_token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor, shift_mask: torch.Tensor
) -> torch.Tensor:
    """WPO pair weights (B,) (Zhou et al., 2024, "WPO: Enhancing RLHF with Weighted Preference
    Optimization", Eq. 2, with TRL's aligned per-token probabilities), detached:

        w(x, y) = exp(mean_t [log pi(y_t|.) - log sum_v pi(v|.)^2]),  weight_i = w(x, y_w) * w(x, y_l).

    ``log_sum_sq_probs`` is log sum_v pi(v|.)^2 per position (TRL's fused LM head output).
    Mirrors TRL's DPOTrainer (``use_weighting``).
    """
    lengths = shift_mask.sum(dim=1).clamp_min(1)
    with torch.no_grad():
        aligned = (per_token_logps - log_sum_sq_probs) * shift_mask
    weights = torch.exp(aligned.sum(dim=1) / lengths)
    chosen_weights, rejected_weights = weights.chunk(2, dim=0)
    return chosen_weights * rejected_weights
