"""DAPO's dynamic sampling, without TRL: which groups carry signal, and the refill loop.

Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
(arXiv:2503.14476), §3.2: a group whose rewards are all equal has zero group-relative
advantage and gives no gradient, so it is dropped, and generation continues until the batch
is full of groups with 0 < accuracy < 1. The adapter generates; this module decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(num_groups,) bool: groups (consecutive ``group_size`` completions) whose scorable rewards differ.

    NaN (unscorable) rewards are ignored; a group with fewer than two distinct scorable
    rewards (all equal, one scorable, none) is uninformative.
    """
    grouped = rewards.view(-1, group_size)
    highest = grouped.nan_to_num(nan=-torch.inf).amax(dim=1)
    lowest = grouped.nan_to_num(nan=torch.inf).amin(dim=1)
    return highest > lowest


@dataclass
class DynamicSamplingPlan:
    """Which groups make the batch, and what it cost.

    - ``chosen``: (round, group index within that round) of each group of the batch, in order;
    - ``rounds``: generation rounds run; ``generated``: completions generated in all of them;
    - ``shortfall``: uninformative groups used to fill the batch because the cap was hit.
    """

    chosen: list[tuple[int, int]] = field(default_factory=list)
    rounds: int = 0
    generated: int = 0
    shortfall: int = 0

    @property
    def informative_kept(self) -> int:
        return len(self.chosen) - self.shortfall

    @property
    def generations_per_kept_group(self) -> float:
        """Completions generated per informative group kept (the price of the filter)."""
        return self.generated / max(self.informative_kept, 1)


def plan_dynamic_batch(
    generate_round: Callable[[int], torch.Tensor], num_groups: int, group_size: int, max_generation_rounds: int
) -> DynamicSamplingPlan:
    """Run ``generate_round(r) -> (B_r,) outcome rewards`` until ``num_groups`` informative groups are found.

    At most ``max_generation_rounds`` rounds. When the cap is hit, the batch is completed with
    the earliest uninformative groups (their group-relative advantage is 0, so they add no
    gradient under a group baseline), so the batch size never changes; ``shortfall`` counts them.
    """
    if max_generation_rounds < 1:
        raise ValueError(f"max_generation_rounds must be >= 1; got {max_generation_rounds}")
    plan = DynamicSamplingPlan()
    informative: list[tuple[int, int]] = []
    uninformative: list[tuple[int, int]] = []
    while plan.rounds < max_generation_rounds and len(informative) < num_groups:
        rewards = generate_round(plan.rounds)
        plan.generated += rewards.numel()
        for group, keep in enumerate(informative_groups(rewards, group_size).tolist()):
            (informative if keep else uninformative).append((plan.rounds, group))
        plan.rounds += 1
    plan.chosen = informative[:num_groups]
    plan.shortfall = num_groups - len(plan.chosen)
    plan.chosen += uninformative[: plan.shortfall]
    return plan
