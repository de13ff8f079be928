"""Per-token KL estimators (Schulman, "Approximating KL divergence", 2020).

Each takes per-token log-probs of the policy and the reference at the sampled tokens,
``(B,T)`` each, and returns the per-token estimate. Which placement gives an unbiased
gradient of KL(pi||ref) is stated per estimator and recorded in its ``kl_gradient``
attribute, which the guard rails read (Tang & Munos 2025, "On a few pitfalls in KL
divergence gradient estimation"; shared KL notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

Verdict = Literal["unbiased", "biased", "zero", "forward_kl"]


@dataclass(frozen=True)
class KLGradientFacts:
    """What the gradient of an estimator estimates in each placement (on-policy).

    - ``reward``: used detached as a per-token penalty in the reward (REINFORCE term).
    - ``loss``: differentiated in the loss without an importance ratio.
    - ``loss_with_ratio``: differentiated in the loss times the importance ratio.
    - ``ratio_detached``: the importance weight that keeps the loss form unbiased off-policy
      must be detached (True: sg(pi/pi_old) * grad k) or carry gradient (False: grad(pi/pi_old * k)).
    """

    reward: Verdict
    loss: Verdict
    loss_with_ratio: Verdict
    ratio_detached: bool
    straight_through: bool = False


def with_gradient_facts(facts: KLGradientFacts) -> Callable[[Callable], Callable]:
    def attach(fn: Callable) -> Callable:
        fn.kl_gradient = facts
        return fn

    return attach


@with_gradient_facts(KLGradientFacts(reward="unbiased", loss="zero", loss_with_ratio="unbiased", ratio_detached=False))
def k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k1 = log(pi/ref).

    Unbiased value. Gradient: unbiased in the *reward* (detached, as a REINFORCE term,
    propagated to earlier tokens); in the *loss* its expected gradient is zero, so that
    placement is refused.
    """
    return logps - ref_logps


@with_gradient_facts(KLGradientFacts(reward="biased", loss="unbiased", loss_with_ratio="biased", ratio_detached=True))
def k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k2 = 1/2 * (log(pi/ref))^2.

    Biased value. Gradient: grad k2 = k1 * grad log pi, so in the *loss* it is unbiased per
    token (off-policy with a detached weight sg(pi/pi_old)); in the reward it is biased and
    has no restoring force near the reference.
    """
    return 0.5 * (logps - ref_logps) ** 2


@with_gradient_facts(
    KLGradientFacts(reward="biased", loss="forward_kl", loss_with_ratio="unbiased", ratio_detached=False)
)
def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 = ref/pi - 1 - log(ref/pi), written as exp(ref - logp) - (ref - logp) - 1.

    Unbiased, non-negative value. Gradient: unbiased per token in the *loss* only times the
    importance ratio pi/sg(pi_old) (TRL's GRPO default, ``use_bias_correction_kl``); without
    the ratio it follows the forward KL(ref||pi) (the GRPO paper, verl ``low_var_kl``); in the
    reward it is biased (grad KL(pi||ref) - grad KL(ref||pi)). Op order matches TRL bitwise.
    """
    return torch.exp(ref_logps - logps) - (ref_logps - logps) - 1


def _straight_through(value: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    gradient_carrier = k2(logps, ref_logps)
    return gradient_carrier - gradient_carrier.detach() + value.detach()


@with_gradient_facts(
    KLGradientFacts(reward="unbiased", loss="unbiased", loss_with_ratio="biased", ratio_detached=True, straight_through=True)
)
def k1_straight_through(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Value of k1, gradient of k2: k2 - sg(k2) + sg(k1).

    Logs an unbiased KL value while its *loss* gradient is k1 * grad log pi (unbiased per
    token). In the reward the straight-through part is a no-op: it acts as k1 (detached). Liu et al.
    2025 (arXiv:2510.01555).
    """
    return _straight_through(k1(logps, ref_logps), logps, ref_logps)


@with_gradient_facts(
    KLGradientFacts(reward="biased", loss="unbiased", loss_with_ratio="biased", ratio_detached=True, straight_through=True)
)
def k3_straight_through(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Value of k3, gradient of k2: k2 - sg(k2) + sg(k3).

    Non-negative, unbiased value with the unbiased per-token *loss* gradient of k2. In the
    reward it acts as k3 (biased). Liu et al. 2025 (arXiv:2510.01555).
    """
    return _straight_through(k3(logps, ref_logps), logps, ref_logps)
