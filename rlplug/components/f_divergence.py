"""f-divergence DPO scores: the log-ratio mapped through f'(pi / pi_ref). Pure tensor code.

Wang et al., 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
Diverse Divergence Constraints" (f-DPO), Theorem 1: with the divergence D_f(pi || pi_ref)
in place of the reverse KL, DPO's implicit reward beta * log(pi / pi_ref) becomes
beta * f'(pi / pi_ref). With u = log pi(y|x) - log pi_ref(y|x) (so pi / pi_ref = e^u):

- ``reverse_kl``: f'(t) = log t + 1, the score u (standard DPO).
- ``forward_kl``: f'(t) = 1 - 1/t, the score 1 - e^{-u}.
- ``js_divergence``: f'(t) = log(2t / (t + 1)), the score log 2 + log sigmoid(u).
- ``alpha_divergence``: f'(t) = (t^(alpha-1) - 1) / (alpha - 1), the score
  (e^{(alpha-1) u} - 1) / (alpha - 1); at alpha = 1 (within 1e-6) it is the reverse KL score.
  As TRL does, (alpha-1) u is clamped above (11 in float16, 80 otherwise) and
  exponentiated in float32.

Constants that cancel in the chosen-minus-rejected difference are dropped, as in TRL's
DPOTrainer (``f_divergence_type``, ``f_alpha_divergence_coef``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

FScore = Callable[[torch.Tensor, float], torch.Tensor]


def reverse_kl_score(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return logratios


def forward_kl_score(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 - torch.exp(-logratios)


def js_divergence_score(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    return math.log(2) + F.logsigmoid(logratios)


_EXP_CLAMP = {torch.float16: 11.0, torch.bfloat16: 80.0, torch.float32: 80.0}


def alpha_divergence_score(logratios: torch.Tensor, alpha: float) -> torch.Tensor:
    if abs(alpha - 1.0) < 1e-6:
        return logratios
    scaled = (alpha - 1.0) * logratios
    clamped = torch.clamp(scaled.float(), max=_EXP_CLAMP[scaled.dtype])
    return (torch.exp(clamped) - 1.0).to(scaled.dtype) * (1.0 / (alpha - 1.0))


F_DIVERGENCE_SCORES: dict[str, FScore] = {
    "reverse_kl": reverse_kl_score,
    "forward_kl": forward_kl_score,
    "js_divergence": js_divergence_score,
    "alpha_divergence": alpha_divergence_score,
}


def f_divergence_scores(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, f_divergence_type: str, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores) for ``f_divergence_type`` (see the module docstring)."""
    score = F_DIVERGENCE_SCORES.get(f_divergence_type)
    if score is None:
        raise ValueError(
            f"f_divergence_type must be one of {', '.join(F_DIVERGENCE_SCORES)}; got {f_divergence_type!r}"
        )
    return score(chosen_logratios, alpha), score(rejected_logratios, alpha)
