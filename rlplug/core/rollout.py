"""The rollout: rlplug's data contract for one online batch. It does not depend on TRL."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """One batch of completions, global over processes so that every group is whole.

    Shapes: B completions, T completion tokens (right-padded), F reward functions.

    - ``rewards`` (B,): the weighted sum of the reward functions; NaN means unscorable.
    - ``rewards_per_func`` (B, F): each reward function's value; NaN where it returned None.
    - ``group_ids`` (B,): which prompt each completion answers. Groups must be of equal size.
    - ``completion_mask`` (B, T): 1 for completion tokens that count, 0 for padding.
    - ``token_rewards`` (B, T), optional: per-token rewards (process supervision, KL in the
      reward). Outcome estimators see them summed into the sequence reward.
    - ``step_mask`` (B, T) bool, optional: the tokens where a reward function gave a step
      (process) reward, held in ``token_rewards``. A completion scored only by steps has
      outcome reward 0 (NaN still means unscorable); see ``rlplug.components.process_rewards``.
    - ``logps``, ``old_logps``, ``ref_logps``, ``values`` (B, T), optional.
    - ``reward_weights`` (F,), optional: each reward function's weight in ``rewards``, for
      estimators that normalize each function before summing (GDPO).
    """

    rewards: torch.Tensor
    group_ids: torch.Tensor
    completion_mask: torch.Tensor
    rewards_per_func: torch.Tensor | None = None
    token_rewards: torch.Tensor | None = None
    logps: torch.Tensor | None = None
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    values: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    reward_weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.rewards.shape[0]
        if self.rewards.dim() != 1:
            raise ValueError(f"Rollout.rewards must be (B,), got shape {tuple(self.rewards.shape)}")
        if self.group_ids.shape != (batch,):
            raise ValueError(f"Rollout.group_ids must be ({batch},), got {tuple(self.group_ids.shape)}")
        if self.completion_mask.dim() != 2 or self.completion_mask.shape[0] != batch:
            raise ValueError(f"Rollout.completion_mask must be ({batch}, T), got {tuple(self.completion_mask.shape)}")
        for name in ("token_rewards", "step_mask", "logps", "old_logps", "ref_logps", "values"):
            value = getattr(self, name)
            if value is not None and value.shape != self.completion_mask.shape:
                raise ValueError(
                    f"Rollout.{name} must match completion_mask {tuple(self.completion_mask.shape)}, "
                    f"got {tuple(value.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.rewards.shape[0]

    @property
    def scorable(self) -> torch.Tensor:
        """(B,) bool: completions with a reward."""
        return ~torch.isnan(self.rewards)

    def sequence_rewards(self) -> torch.Tensor:
        """(B,): the outcome reward plus the masked sum of the per-token rewards, if any."""
        if self.token_rewards is None:
            return self.rewards
        return self.rewards + (self.token_rewards * self.completion_mask).sum(-1)

    def group_size(self) -> int:
        """The common size of the groups; raises if groups differ in size."""
        _, counts = torch.unique(self.group_ids, return_counts=True)
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"groups must be of equal size, got sizes {sorted(set(counts.tolist()))}")
        return int(counts[0])

    def grouped(self, values: torch.Tensor) -> torch.Tensor:
        """Arrange a (B, ...) tensor as (num_groups, group_size, ...), groups in order of first id."""
        size = self.group_size()
        order = self._group_order()
        return values[order].view(-1, size, *values.shape[1:])

    def ungrouped(self, grouped_values: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`grouped`: back to (B, ...) in the rollout's order."""
        flat = grouped_values.reshape(self.batch_size, *grouped_values.shape[2:])
        out = torch.empty_like(flat)
        out[self._group_order()] = flat
        return out

    def _group_order(self) -> torch.Tensor:
        return torch.sort(self.group_ids, stable=True).indices
