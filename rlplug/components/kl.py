"""Per-token KL estimators (Schulman, "Approximating KL divergence", 2020).

Each takes per-token log-probs of the policy and the reference at the sampled tokens,
``(B,T)`` each, and returns the per-token estimate. Which placement gives an unbiased
gradient of KL(pi||ref) is stated per estimator (see shared KL notes: Tang & Munos 2025).
"""

from __future__ import annotations

import torch


def k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k1 = log(pi/ref).

    Unbiased value. Gradient: unbiased in the *reward* (detached, as a REINFORCE term,
    propagated to earlier tokens); in the *loss* its expected gradient is zero, so that
    placement is refused.
    """
    return logps - ref_logps


def k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k2 = 1/2 * (log(pi/ref))^2.

    Biased value. Gradient: unbiased per token in the *loss* (its gradient is k1 * grad log pi);
    biased in the reward.
    """
    return 0.5 * (logps - ref_logps) ** 2


def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 = ref/pi - 1 - log(ref/pi), written as exp(ref - logp) - (ref - logp) - 1.

    Unbiased, non-negative value. Gradient: unbiased per token in the *loss* only when
    multiplied by the importance ratio pi/sg(pi_old) (TRL's default when beta > 0);
    without the ratio it follows the forward KL(ref||pi); biased in the reward.
    The operation order matches TRL's GRPOTrainer bitwise.
    """
    return torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
