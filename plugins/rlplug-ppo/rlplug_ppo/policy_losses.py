"""A2C's policy loss: the importance-weighted policy gradient without clipping."""

from __future__ import annotations

import torch


def unclipped_pg(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """l_t = -rho_t A_t, rho_t = pi/pi_old, no clip (A2C, Mnih et al. 2016, arXiv:1602.01783).

    On-policy (one pass, pi_old = sg(pi)) rho_t = 1 and the gradient is -A_t grad log pi_t.
    """
    return -torch.exp(logps - old_logps) * advantages, {}
