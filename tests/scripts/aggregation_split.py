"""One optimizer step of a loss aggregation, split as GRPOTrainer splits it (shared by
tests/test_aggregation_invariance.py and tests/scripts/two_process_aggregation.py).

TRL 1.16 ``GRPOTrainer``: each process holds ``per_device_train_batch_size x steps_per_generation``
completions of the generation batch and slices them into ``steps_per_generation`` micro-batches
(``split_tensor_dict``, contiguous); ``num_items_in_batch`` is the completion-token count of the
whole generation batch over all processes (``gather(loss_mask.sum()).sum()``); the loss comes back
already scaled for accumulation (``loss_is_scaled_for_ga``), so the Trainer sums the micro-batch
gradients unscaled; DDP averages the gradients of the processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rlplug.core.aggregation import AggregationContext

B, T, V = 8, 5, 4


@dataclass(frozen=True)
class Split:
    processes: int
    accumulation: int  # gradient_accumulation_steps == steps_per_generation (TRL's default)
    per_device: int

    @property
    def name(self) -> str:
        return f"{self.processes}proc-{self.accumulation}acc-{self.per_device}per_device"


SPLITS = [Split(1, 1, 8), Split(1, 2, 4), Split(1, 4, 2), Split(2, 1, 4), Split(2, 2, 2), Split(2, 4, 1)]


def fabricated_batch() -> dict[str, torch.Tensor]:
    """B completions of variable length (1..T tokens, padded), token features and advantages."""
    generator = torch.Generator().manual_seed(14)
    lengths = torch.tensor([5, 1, 3, 5, 2, 4, 1, 5])
    return {
        "features": torch.randn(B, T, V, generator=generator, dtype=torch.float64),
        "advantages": torch.randn(B, 1, generator=generator, dtype=torch.float64),
        "mask": (torch.arange(T) < lengths[:, None]).to(torch.float64),
    }


def initial_theta() -> torch.Tensor:
    return torch.linspace(-0.5, 0.7, V, dtype=torch.float64)


def per_token_loss(theta: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A nonlinear per-token loss, so tokens and sequences weigh differently: -A_i x_it.theta + 0.1 (x_it.theta)^2."""
    score = batch["features"] @ theta
    return -batch["advantages"] * score + 0.1 * score**2


def rows(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in batch.items()}


def process_loss_terms(aggregation: Callable, theta: torch.Tensor, batch: dict[str, torch.Tensor],
                       split: Split, rank: int) -> list[torch.Tensor]:
    """The losses one process backpropagates in one optimizer step, in order."""
    local = B // split.processes
    process_batch = rows(batch, rank * local, (rank + 1) * local)
    ctx = AggregationContext(
        gradient_accumulation_steps=split.accumulation,
        num_items_in_batch=batch["mask"].sum(),
        num_processes=split.processes,
        steps_per_generation=split.accumulation,
        max_completion_length=T,
        training=True,
    )
    losses = []
    for step in range(split.accumulation):
        micro = rows(process_batch, step * split.per_device, (step + 1) * split.per_device)
        losses.append(aggregation(per_token_loss(theta, micro), micro["mask"], ctx))
    return losses


def step_gradient(aggregation: Callable, split: Split) -> torch.Tensor:
    """The gradient of one optimizer step, processes simulated: sum over micro-batches, mean over processes."""
    batch = fabricated_batch()
    total = torch.zeros(V, dtype=torch.float64)
    for rank in range(split.processes):
        theta = initial_theta().requires_grad_()
        for loss in process_loss_terms(aggregation, theta, batch, split, rank):
            loss.backward()
        total += theta.grad
    return total / split.processes
