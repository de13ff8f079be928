"""Where the KL term enters the objective: the reward, the loss, or nowhere.

Pure tensor functions; the adapters call them. The guard rails read each estimator's
``kl_gradient`` facts (see rlplug.components.kl), so third-party estimators take part.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from rlplug.core.algorithm import KLSpec
from rlplug.components.kl import KLGradientFacts, k3
from rlplug.components.stats import reverse_cumsum

KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class KLConfigError(ValueError):
    """A KL estimator and placement whose gradient is known to be wrong."""


class KLGradientWarning(UserWarning):
    """A KL estimator and placement whose gradient is biased."""


def kl_guard_messages(spec: KLSpec, facts: KLGradientFacts | None, off_policy: bool) -> list[str]:
    """Why this spec's gradient is biased, with the fix; empty when it is fine.

    Raises :class:`KLConfigError` for a combination whose expected gradient is zero.
    """
    if not spec.active or facts is None:
        return []
    name = spec.estimator
    if spec.placement == "loss" and facts.loss == "zero":
        raise KLConfigError(
            f"kl: {name} in the loss is refused: differentiated, its expected gradient is zero, so it regularizes "
            f"nothing. Use `kl: {{estimator: {name}, placement: reward}}` or `{{estimator: k3, placement: loss}}`."
        )
    messages = []
    if spec.placement == "reward":
        if facts.straight_through:
            messages.append(
                f"kl: {name} is a straight-through form; in the reward only its value counts, so the trick is a "
                "no-op. Use k1 in the reward, or the straight-through form in the loss."
            )
        if facts.reward != "unbiased":
            messages.append(
                f"kl: {name} in the reward has a biased gradient (k2: no restoring force near the reference; "
                "k3: grad KL(pi||ref) - grad KL(ref||pi)). Use `estimator: k1` in the reward."
            )
    if spec.placement == "loss":
        verdict = facts.loss_with_ratio if spec.importance_ratio and not facts.ratio_detached else facts.loss
        if verdict == "forward_kl":
            messages.append(
                f"kl: {name} in the loss without the importance ratio follows the forward KL(ref||pi) and converges "
                "to the wrong optimum. Set `importance_ratio: true` (k3 x pi/pi_old), or use k2 in the loss."
            )
        elif verdict not in ("unbiased",):
            messages.append(f"kl: {name} in the loss with importance_ratio={spec.importance_ratio} is biased.")
        if off_policy and not spec.importance_ratio:
            messages.append(
                f"kl: {name} in the loss off-policy (num_iterations > 1 or vLLM sampling) without an importance "
                "weight is biased. Set `importance_ratio: true`."
            )
    return messages


def check_kl_spec(spec: KLSpec, estimator: KLEstimator | None = None, off_policy: bool = False) -> None:
    """Refuse combinations that regularize nothing; warn (once per call site) for biased ones."""
    facts = getattr(estimator, "kl_gradient", None) if estimator is not None else _builtin_facts(spec.estimator)
    for message in kl_guard_messages(spec, facts, off_policy):
        warnings.warn(message, KLGradientWarning, stacklevel=3)


def _builtin_facts(name: str) -> KLGradientFacts | None:
    from rlplug.core.plugins import get_registry

    registry = get_registry()
    if name not in registry.names("kl_estimators"):
        return None
    return getattr(registry.get("kl_estimators", name), "kl_gradient", None)


def reward_kl_token_rewards(
    spec: KLSpec, estimator: KLEstimator, sampling_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token rewards -coef * KL_t at the sampled tokens, detached and masked.

    Outcome estimators see them summed into the sequence reward (R - coef * sum_t KL_t),
    as in Ziegler et al. 2019 and TRL's RLOO; per-token estimators propagate them as
    returns. Never added to its own token's advantage alone.
    """
    with torch.no_grad():
        return -spec.coef * estimator(sampling_logps, ref_logps) * mask


def loss_kl_term(
    spec: KLSpec,
    estimator: KLEstimator,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """coef * [w_t * KL_t(logps, ref) + sg(w_t * sum_{u>t} k1_u) * log pi_t], the per-token loss term.

    ``w_t = pi/pi_old`` when ``importance_ratio`` (detached if the estimator's facts say
    so, e.g. k2), else 1. With k3 and the differentiable ratio this is TRL's GRPO KL term
    (``use_bias_correction_kl``). The second term is added with ``future_kl_correction``
    and needs ``mask``: it makes per-token forms exact for whole sequences (shared KL notes).
    """
    per_token_kl = estimator(logps, ref_logps)
    weight = None
    if spec.importance_ratio:
        weight = torch.exp(logps - old_logps)
        facts = getattr(estimator, "kl_gradient", None)
        if facts is not None and facts.ratio_detached:
            weight = weight.detach()
        per_token_kl = per_token_kl * weight
    if spec.future_kl_correction:
        if mask is None:
            raise ValueError("future_kl_correction needs the completion mask")
        per_token_kl = per_token_kl + future_kl_term(logps, ref_logps, mask, weight)
    return spec.coef * per_token_kl


def future_kl_term(
    logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """sg(w_t * sum_{u>t} k1_u) * log pi_t: the score-function part of the sequence KL gradient
    that per-token loss forms miss (the influence of token t on the KL of later tokens)."""
    with torch.no_grad():
        k1_values = (logps - ref_logps) * mask
        future = reverse_cumsum(k1_values) - k1_values
        if weight is not None:
            future = future * weight.detach()
    return future * logps


def kl_value(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The per-token KL value to log: k3, unbiased and non-negative, never differentiated."""
    with torch.no_grad():
        return k3(logps, ref_logps)
