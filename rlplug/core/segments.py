"""Segment-level preference data: the part of the batch contract that fine-grained losses read.

A loss declared with ``@preference_loss(needs_segments=True)`` (2D-DPO) gets, besides the
sequence sums of :class:`rlplug.core.preference.PreferenceBatch`, a :class:`SegmentBatch`
in ``batch.segments``. No TRL here.

Dataset columns (one row = one prompt with a chosen and a rejected completion), besides
``prompt``, ``chosen``, ``rejected``:

- ``chosen_segments``, ``rejected_segments``: ``list[int]``, the token counts of
  consecutive segments of the tokenized completion, from its first token. Segment k of the
  chosen completion covers its tokens ``[sum(chosen_segments[:k]), sum(chosen_segments[:k+1]))``.
  Tokens after the last segment (e.g. the EOS TRL appends) belong to no segment and
  are not trained on.
- ``chosen_segment_scores``, ``rejected_segment_scores``: ``list[list[float]]``, one list
  of A aspect scores per segment (N x A).

Chosen and rejected have the same number of segments N (segment k of one is compared with
segment k of the other, seed 003 Eq. 79) and the same aspects A, within a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

SEGMENT_COLUMNS: tuple[str, ...] = (
    "chosen_segments", "rejected_segments", "chosen_segment_scores", "rejected_segment_scores",
)


@dataclass(frozen=True)
class SegmentBatch:
    """Per-segment sums of a paired micro-batch. B rows, K = the most segments in a row, A aspects.

    - ``chosen_logps``, ``rejected_logps`` (B, K): policy log-probs summed over each segment's
      tokens, differentiable; 0 where ``mask`` is False.
    - ``ref_chosen_logps``, ``ref_rejected_logps`` (B, K): the same for the reference model.
    - ``chosen_scores``, ``rejected_scores`` (B, K, A): the aspect scores of each segment.
    - ``mask`` (B, K) bool: True for the segments a row has (rows with fewer are padded).
    """

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor
    ref_rejected_logps: torch.Tensor
    chosen_scores: torch.Tensor
    rejected_scores: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.mask.shape)
        if len(shape) != 2 or self.mask.dtype != torch.bool:
            raise ValueError(f"SegmentBatch.mask must be a (B, K) bool tensor, got {self.mask.dtype} {shape}")
        for name in ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"SegmentBatch.{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        for name in ("chosen_scores", "rejected_scores"):
            value = getattr(self, name)
            if value.dim() != 3 or tuple(value.shape[:2]) != shape:
                raise ValueError(f"SegmentBatch.{name} must have shape {shape} + (A,), got {tuple(value.shape)}")
        if self.chosen_scores.shape[2] != self.rejected_scores.shape[2]:
            raise ValueError("SegmentBatch.chosen_scores and rejected_scores must have the same number of aspects")

    @property
    def chosen_logratios(self) -> torch.Tensor:
        """(B, K) per segment: log pi(y_w,k|x) - log pi_ref(y_w,k|x)."""
        return self.chosen_logps - self.ref_chosen_logps

    @property
    def rejected_logratios(self) -> torch.Tensor:
        """(B, K) per segment: log pi(y_l,k|x) - log pi_ref(y_l,k|x)."""
        return self.rejected_logps - self.ref_rejected_logps


def segment_ids(lengths: Sequence[int], completion_length: int, field: str) -> list[int]:
    """Per completion token, the index of its segment (-1 after the last segment).

    ``lengths`` are the token counts of ``field``; they must be positive and fit the completion.
    """
    if any(not isinstance(n, int) or n <= 0 for n in lengths):
        raise ValueError(f"{field} must be positive token counts, got {list(lengths)}")
    if sum(lengths) > completion_length:
        raise ValueError(
            f"{field} covers {sum(lengths)} tokens but the tokenized completion has {completion_length}"
        )
    ids = [k for k, n in enumerate(lengths) for _ in range(n)]
    return ids + [-1] * (completion_length - len(ids))


def check_segment_row(row: dict[str, Any]) -> tuple[int, int]:
    """Check one row's segment columns agree; returns (N segments, A aspects)."""
    missing = [column for column in SEGMENT_COLUMNS if column not in row]
    if missing:
        raise ValueError(f"segment-level preference data lacks column(s) {', '.join(missing)}")
    count = len(row["chosen_segments"])
    if count == 0:
        raise ValueError("chosen_segments is empty: a row needs at least one segment")
    for side in ("chosen", "rejected"):
        if len(row[f"{side}_segments"]) != count or len(row[f"{side}_segment_scores"]) != count:
            raise ValueError(
                f"{side}_segments and {side}_segment_scores must both have {count} entries (one per segment, "
                f"as many as chosen_segments); got {len(row[f'{side}_segments'])} and "
                f"{len(row[f'{side}_segment_scores'])}"
            )
    aspects = {len(scores) for side in ("chosen", "rejected") for scores in row[f"{side}_segment_scores"]}
    if len(aspects) != 1 or 0 in aspects:
        raise ValueError(f"every segment needs the same non-zero number of aspect scores; got {sorted(aspects)}")
    return count, aspects.pop()
