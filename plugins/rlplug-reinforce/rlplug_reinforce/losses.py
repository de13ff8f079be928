"""The plain policy-gradient loss of strictly on-policy REINFORCE."""

from __future__ import annotations

import torch


def policy_gradient(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE's surrogate per token: l_t = -A_t log pi_t; no ratio, no clip.

    Williams 1992; grad l_t = -A_t grad log pi_t. ``old_logps`` is ignored: the estimator is
    unbiased only on-policy, i.e. each generation batch used for exactly one optimizer step
    (``num_iterations=1`` and ``steps_per_generation == gradient_accumulation_steps``, TRL's
    defaults). On reused batches use a ratio loss (``ppo_clip`` from rlplug-grpo).
    """
    return -advantages * logps, {}
