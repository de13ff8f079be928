"""Run under ``torchrun --nproc_per_node 2``: one optimizer step of every registered aggregation
through real DDP (gloo), micro-batches accumulated under ``no_sync`` as the Trainer does.

Rank 0 saves ``{aggregation name: {split name: gradient}}`` to ``OUT/grads.pt``.

Usage: torchrun --standalone --nproc_per_node 2 two_process_aggregation.py OUT_DIR
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from aggregation_split import SPLITS, fabricated_batch, initial_theta, process_loss_terms
from rlplug import get_registry


class Theta(torch.nn.Module):
    """The parameter; ``forward(build)`` returns ``build(theta)`` so DDP sees the losses built in its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(initial_theta())

    def forward(self, build):
        return build(self.theta)


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    registry = get_registry()
    results = {}
    for name in registry.names("loss_aggregations"):
        aggregation = registry.get("loss_aggregations", name)
        results[name] = {}
        for split in [s for s in SPLITS if s.processes == 2]:
            module = Theta()
            ddp = torch.nn.parallel.DistributedDataParallel(module)
            for step in range(split.accumulation):
                last = step == split.accumulation - 1
                with contextlib.nullcontext() if last else ddp.no_sync():
                    build = lambda theta, k=step: process_loss_terms(  # noqa: E731
                        aggregation, theta, fabricated_batch(), split, rank)[k]
                    loss = ddp(build)
                    loss.backward()
            results[name][split.name] = module.theta.grad.clone()
    if rank == 0:
        torch.save(results, out_dir / "grads.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
