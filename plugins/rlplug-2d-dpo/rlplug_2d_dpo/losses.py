"""The 2D-DPO loss on rlplug's PreferenceBatch (segment-level sums). Pure tensor code."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, SegmentBatch, paired_reward_metrics, preference_loss


def segment_rewards(scores: torch.Tensor, aspect_weights: Sequence[float] | None) -> torch.Tensor:
    """(B, K, A) aspect scores -> (B, K) segment scores r_k = sum_a w_a * s_{k,a} (w: uniform 1/A if None)."""
    aspects = scores.shape[-1]
    if aspect_weights is None:
        weights = scores.new_full((aspects,), 1.0 / aspects)
    else:
        if len(aspect_weights) != aspects:
            raise ValueError(f"aspect_weights has {len(aspect_weights)} entries but the data has {aspects} aspects")
        weights = torch.tensor(list(aspect_weights), dtype=scores.dtype, device=scores.device)
    return scores @ weights


@preference_loss(data="paired", needs_reference=True, needs_segments=True)
def two_d_dpo(
    batch: PreferenceBatch, beta: float = 0.1, aspect_weights: Sequence[float] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """2D-DPO (Li et al., 2024, "2D-DPO: Scaling Direct Preference Optimization with
    2-Dimensional Supervision"; seed 003 §5.3.3, Eq. 79), the segment-group loss:

        L_i = -sum_k log sigmoid(beta * r_{w,k} * sum_{t in seg_k(y_w)} log pi/pi_ref(a_t^w|s_t^w)
                                - beta * r_{l,k} * sum_{t in seg_k(y_l)} log pi/pi_ref(a_t^l|s_t^l))

    over the segments k a row has (padding segments add nothing). r_{.,k} is the segment's
    score, the ``aspect_weights``-weighted sum of its aspect scores (the mean when None).
    With one segment covering the whole completion and r = 1 on both sides it is DPO.
    Metrics: TRL's rewards/* with the rewards beta * sum_k r_k * log-ratio_k.
    """
    segments: SegmentBatch = batch.segments
    if segments is None:
        raise ValueError("2d_dpo reads PreferenceBatch.segments; the adapter fills it for needs_segments losses")
    chosen = segment_rewards(segments.chosen_scores, aspect_weights) * segments.chosen_logratios
    rejected = segment_rewards(segments.rejected_scores, aspect_weights) * segments.rejected_logratios
    per_segment = -F.logsigmoid(beta * (chosen - rejected))
    mask = segments.mask.to(per_segment.dtype)
    losses = (per_segment * mask).sum(dim=1)
    return losses, paired_reward_metrics(beta * (chosen * mask).sum(dim=1), beta * (rejected * mask).sum(dim=1))
