"""What a loss aggregation is told about the batch it reduces."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AggregationContext:
    """What an aggregation may need besides the loss and the mask.

    - ``gradient_accumulation_steps``: micro-batches per optimizer step now (1 in eval).
    - ``num_items_in_batch``: completion tokens in the whole generation batch, all processes.
    - ``num_processes``, ``steps_per_generation``: to turn that count into one micro-batch's share.
    - ``max_completion_length``: the constant of Dr.GRPO's normalizer.
    - ``training``: False in evaluation, where nothing is accumulated.
    """

    gradient_accumulation_steps: int = 1
    num_items_in_batch: torch.Tensor | None = None
    num_processes: int = 1
    steps_per_generation: int = 1
    max_completion_length: int = 1
    training: bool = True
