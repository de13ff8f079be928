"""Segment-level data on TRL's DPOTrainer, for losses declared ``needs_segments`` (2D-DPO).

TRL tokenizes ``prompt``/``chosen``/``rejected`` and keeps the other columns; its collator
is wrapped to add, per sequence, the segment index of every position (aligned with
``input_ids``, -1 outside segments) and the padded aspect scores. The adapter sums the
policy's and the reference's per-token log-probs over each segment.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from rlplug.core.segments import SEGMENT_COLUMNS, SegmentBatch, check_segment_row, segment_ids

SEGMENT_KEYS = frozenset({"segment_ids", "chosen_segment_scores", "rejected_segment_scores", "segment_mask"})


def use_segments(trainer: Any) -> None:
    """Make a DPOTrainer keep the segment columns and collate them."""
    if trainer.precompute_ref_logps:
        raise ValueError("precompute_ref_log_probs: a segment-level loss needs per-token reference log-probs; unset it")
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, *SEGMENT_COLUMNS]
    trainer.data_collator = SegmentCollator(trainer.data_collator, trainer.args.max_length, trainer.args.truncation_mode)


def _truncate(ids: list[int], max_length: int | None, mode: str) -> list[int]:
    if max_length is None:
        return ids
    return ids[:max_length] if mode == "keep_start" else ids[-max_length:]


class SegmentCollator:
    """Wraps TRL's preference collator; adds ``segment_ids`` (2B, L) and the scores (B, K, A)."""

    def __init__(self, base: Callable[[list[dict[str, Any]]], dict[str, Any]], max_length: int | None,
                 truncation_mode: str) -> None:
        self.base = base
        self.max_length = max_length
        self.truncation_mode = truncation_mode

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        shapes = [check_segment_row(example) for example in examples]
        aspects = {a for _, a in shapes}
        if len(aspects) != 1:
            raise ValueError(f"all rows need the same number of aspect scores per segment; got {sorted(aspects)}")
        output = self.base([{k: v for k, v in e.items() if k not in SEGMENT_COLUMNS} for e in examples])
        width = output["input_ids"].shape[1]
        rows = []
        for side in ("chosen", "rejected"):
            for example in examples:
                prompt = [-1] * len(example["prompt_ids"])
                ids = segment_ids(example[f"{side}_segments"], len(example[f"{side}_ids"]), f"{side}_segments")
                ids = _truncate(prompt + ids, self.max_length, self.truncation_mode)
                rows.append(ids + [-1] * (width - len(ids)))
        output["segment_ids"] = torch.tensor(rows, dtype=torch.long)
        most = max(n for n, _ in shapes)
        (num_aspects,) = aspects
        mask = torch.zeros(len(examples), most, dtype=torch.bool)
        for side in ("chosen", "rejected"):
            scores = torch.zeros(len(examples), most, num_aspects)
            for i, example in enumerate(examples):
                count = len(example[f"{side}_segment_scores"])
                scores[i, :count] = torch.tensor(example[f"{side}_segment_scores"], dtype=torch.float32)
                mask[i, :count] = True
            output[f"{side}_segment_scores"] = scores
        output["segment_mask"] = mask
        return output


def segment_sums(per_token_logps: torch.Tensor, shifted_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """(N, L) per-token log-probs and segment indices (-1: none) -> (N, K) sums per segment."""
    inside = shifted_ids >= 0
    values = torch.where(inside, per_token_logps, torch.zeros_like(per_token_logps))
    sums = per_token_logps.new_zeros(per_token_logps.shape[0], num_segments)
    return sums.scatter_add(1, shifted_ids.clamp(min=0), values)


def reference_token_logps(trainer: Any, model_kwargs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    """Per-token reference log-probs, as TRL's ``compute_ref_log_probs`` computes them before summing."""
    model = trainer.ref_model if trainer.ref_model is not None else trainer.model
    adapter_context = contextlib.nullcontext()
    if trainer.ref_model is None and is_peft_model(trainer.model):
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
    with (
        torch.no_grad(),
        disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs),
        adapter_context,
        trainer.accelerator.autocast(),
    ):
        return model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs


def build_segment_batch(trainer: Any, inputs: dict[str, Any], model_kwargs: dict[str, Any], labels: torch.Tensor,
                        per_token_logps: torch.Tensor) -> tuple[SegmentBatch, torch.Tensor, torch.Tensor]:
    """The :class:`SegmentBatch` of a micro-batch and the reference's sequence sums (chosen, rejected).

    One reference forward serves both: the sequence sums are the per-token sums over the
    whole completion, as TRL's ``compute_ref_log_probs`` returns them.
    """
    width = per_token_logps.shape[1]
    shifted = inputs["segment_ids"][:, 1:][:, -width:]
    mask = inputs["segment_mask"]
    count = mask.shape[1]
    ref_tokens = reference_token_logps(trainer, model_kwargs, labels)[:, -width:]
    policy = segment_sums(per_token_logps, shifted, count)
    reference = segment_sums(ref_tokens, shifted, count)
    chosen, rejected = policy.chunk(2, dim=0)
    ref_chosen, ref_rejected = reference.chunk(2, dim=0)
    segments = SegmentBatch(
        chosen_logps=chosen, rejected_logps=rejected, ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected,
        chosen_scores=inputs["chosen_segment_scores"], rejected_scores=inputs["rejected_segment_scores"], mask=mask,
    )
    ref_chosen_sums, ref_rejected_sums = ref_tokens.sum(dim=1).chunk(2, dim=0)
    return segments, ref_chosen_sums, ref_rejected_sums
