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


def loss_verdict(spec: KLSpec, facts: KLGradientFacts) -> str:
    """What a loss-placed estimator's gradient estimates per token: the facts for its ratio setting."""
    return facts.loss_with_ratio if spec.importance_ratio and not facts.ratio_detached else facts.loss


def kl_guard_messages(spec: KLSpec, facts: KLGradientFacts | None, off_policy: bool) -> list[str]:
    """Why this spec's gradient is biased, with the fix; empty when it is fine.

    Raises :class:`KLConfigError` for a combination whose expected gradient is zero.
    """
    if not spec.active or facts is None:
        return []
    name = spec.estimator
    if spec.placement == "loss" and loss_verdict(spec, facts) == "zero":
        raise KLConfigError(
            f"kl: {name} in the loss without the importance ratio is refused: differentiated, its expected gradient "
            f"is zero, so it regularizes nothing. Use `kl: {{estimator: {name}, placement: reward}}`, "
            f"`{{estimator: {name}, placement: loss, importance_ratio: true}}` or `{{estimator: k3, placement: loss}}`."
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
        verdict = loss_verdict(spec, facts)
        if verdict == "forward_kl":
            messages.append(
                f"kl: {name} in the loss without the importance ratio follows the forward KL(ref||pi) and converges "
                "to the wrong optimum. Set `importance_ratio: true` (k3 x pi/pi_old), or use k2 in the loss."
            )
        elif verdict not in ("unbiased",):
            messages.append(f"kl: {name} in the loss with importance_ratio={spec.importance_ratio} is biased.")
        elif not spec.future_kl_correction:
            messages.append(
                f"kl: {name} in the loss is exact per token but biased for whole sequences (it misses each token's "
                "influence on the KL of later tokens; relative error 0.04-0.9 at 3 tokens). Set "
                "`kl: {future_kl_correction: true}`, or use k1 in the reward."
            )
        if off_policy and not spec.importance_ratio:
            messages.append(
                f"kl: {name} in the loss off-policy (num_iterations > 1 or vLLM sampling) without an importance "
                "weight is biased. Set `importance_ratio: true` and `future_kl_correction: true` (prefix importance "
                "weights, exact for sequences)."
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
    """The per-token loss term of a loss-placed KL.

    Without ``future_kl_correction``: ``coef * w_t * KL_t(logps, ref)``, with ``w_t = pi_t/pi_old_t``
    when ``importance_ratio`` (detached if the estimator's facts say so, e.g. k2), else 1. With k3
    and the differentiable ratio this is TRL's GRPO KL term (``use_bias_correction_kl``): exact
    per token, not for sequences.

    With ``future_kl_correction`` (needs ``mask``):
    ``coef * [sg(P_{t-1}) * w_t * KL_t + sg(sum_{u>t} P_u * k1_u) * log pi_t]``, where
    ``P_t = prod_{u<=t} pi_u/pi_old_u`` are the prefix importance weights
    (:func:`sequence_kl_weights`; all 1 on-policy, and only with ``importance_ratio``). Its
    expected gradient under the sampling policy is exactly grad KL(pi||ref) of whole sequences,
    on- and off-policy (shared KL notes; Tang & Munos 2025).
    """
    per_token_kl = estimator(logps, ref_logps)
    if spec.importance_ratio:
        weight = torch.exp(logps - old_logps)
        facts = getattr(estimator, "kl_gradient", None)
        if facts is not None and facts.ratio_detached:
            weight = weight.detach()
        per_token_kl = per_token_kl * weight
    if spec.future_kl_correction:
        if mask is None:
            raise ValueError("future_kl_correction needs the completion mask")
        prefix = None
        if spec.importance_ratio:
            prefix = sequence_kl_weights(logps, old_logps, mask)
            per_token_kl = per_token_kl * sequence_kl_weights(logps, old_logps, mask, exclusive=True)
        per_token_kl = per_token_kl + future_kl_term(logps, ref_logps, mask, prefix)
    return spec.coef * per_token_kl


def sequence_kl_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, exclusive: bool = False
) -> torch.Tensor:
    """Prefix importance weights P_t = prod_{u<=t, m_u=1} pi_u/pi_old_u, detached (``exclusive``: u<t).

    E_{pi_old}[P_t f(y_{<=t})] = E_pi[f(y_{<=t})], so weighting token t's KL terms by P_t makes a
    loss-placed KL exact for sequences off-policy (PPO epochs > 1, vLLM); a per-token ratio alone
    fixes token t's own factor only. On-policy every weight is exactly 1.
    """
    with torch.no_grad():
        log_ratios = (logps - old_logps) * mask
        log_prefix = torch.cumsum(log_ratios, dim=-1)
        return torch.exp(log_prefix - log_ratios if exclusive else log_prefix)


def future_kl_term(
    logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """sg(sum_{u>t} w_u * k1_u) * log pi_t: the score-function part of the sequence KL gradient
    that per-token loss forms miss (the influence of token t on the KL of later tokens). ``w``
    are the prefix importance weights of :func:`sequence_kl_weights` (None: all 1)."""
    with torch.no_grad():
        k1_values = (logps - ref_logps) * mask
        if weight is not None:
            k1_values = k1_values * weight
        future = reverse_cumsum(k1_values) - k1_values
    return future * logps


def kl_value(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The per-token KL value to log: k3, unbiased and non-negative, never differentiated."""
    with torch.no_grad():
        return k3(logps, ref_logps)
