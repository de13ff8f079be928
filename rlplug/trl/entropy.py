"""The online adapter's entropy regularization, set by TRL's own fields.

``top_entropy_quantile`` < 1 weights the per-token policy loss by the high-entropy mask;
``entropy_coef`` != 0 or ``use_adaptive_entropy`` adds the entropy bonus to the aggregated
loss. The math is :mod:`rlplug.components.entropy`; this module gathers across processes
and keeps the adaptive controller's per-window state, as TRL's GRPOTrainer does.
"""

from __future__ import annotations

from typing import Any

import torch

from rlplug.components.entropy import AdaptiveEntropyController, entropy_bonus_term, high_entropy_mask


class EntropyRegularization:
    """The entropy filter and bonus of one trainer, from its GRPOConfig."""

    def __init__(self, args: Any) -> None:
        self.top_entropy_quantile: float = args.top_entropy_quantile
        if not 0.0 <= self.top_entropy_quantile <= 1.0:
            raise ValueError(f"top_entropy_quantile must be in [0, 1]; got {self.top_entropy_quantile!r}")
        self.coef: float = args.entropy_coef
        self.controller = (
            AdaptiveEntropyController(
                coef=args.entropy_coef, target=args.entropy_target, delta=args.entropy_coef_delta,
                coef_min=args.entropy_coef_min, coef_max=args.entropy_coef_max,
            )
            if args.use_adaptive_entropy
            else None
        )
        self.bonus_enabled = self.coef != 0.0 or self.controller is not None
        self._window: torch.Tensor | None = None

    @property
    def filters_tokens(self) -> bool:
        return self.top_entropy_quantile < 1.0

    @property
    def current_coef(self) -> float:
        return self.coef if self.controller is None else self.controller.coef

    def token_mask(self, accelerator: Any, entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The high-entropy mask over the global micro-batch, or None when the filter is off."""
        if not self.filters_tokens:
            return None
        pad_value = -1e9  # entropies are >= 0, so the sentinel cannot be a real value
        local = entropies[mask.bool()].float()
        gathered = accelerator.gather(accelerator.pad_across_processes(local, dim=0, pad_index=pad_value))
        return high_entropy_mask(entropies, mask, gathered[gathered != pad_value], self.top_entropy_quantile)

    def add_bonus(
        self, trainer: Any, loss: torch.Tensor, entropies: torch.Tensor, mask: torch.Tensor,
        entropy_mask: torch.Tensor | None, mode: str,
    ) -> torch.Tensor:
        """``loss`` with the entropy bonus added; updates the adaptive coefficient at step boundaries."""
        if not self.bonus_enabled:
            return loss
        effective_mask = mask if entropy_mask is None else mask * entropy_mask
        accumulation = trainer.current_gradient_accumulation_steps if mode == "train" else 1.0
        coef = self.coef if self.controller is None else self.controller.applied_coef()
        loss = loss + entropy_bonus_term(entropies, effective_mask, coef, accumulation)
        sync = trainer.accelerator.sync_gradients
        if self.controller is not None and mode == "train":
            stats = torch.stack([(entropies * effective_mask).sum(), effective_mask.sum()]).detach()
            self._window = stats if self._window is None else self._window + stats
            if sync:
                totals = trainer.accelerator.reduce(self._window, reduction="sum")
                self.controller.update((totals[0] / totals[1].clamp(min=1.0)).item())
                self._window = None
        if mode == "train" and sync:
            trainer._metrics[mode]["entropy_coef"].append(self.current_coef)
        return loss
