"""The IPO loss on rlplug's PreferenceBatch. Pure tensor code."""

from __future__ import annotations

import torch

from rlplug import PreferenceBatch, f_divergence_scores, paired_reward_metrics, preference_loss


@preference_loss(data="paired", needs_reference=True)
def ipo(
    batch: PreferenceBatch,
    beta: float = 0.1,
    normalize_length: bool = True,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences", Eq. 17), with ``beta`` as the paper's tau.

    With h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)):

    - ``normalize_length=True`` (default, TRL's ``ipo``): each log-ratio is divided by its
      completion's token count before the difference,
      L_i = (h_w / |y_w| - h_l / |y_l| - 1 / (2 beta))^2.
      TRL notes that the IPO authors confirmed their reported results use this form.
    - ``normalize_length=False`` (the seeds' and the paper's formula, on summed log-probs):
      L_i = (h - 1 / (2 beta))^2.

    With ``f_divergence_type`` other than ``reverse_kl`` each log-ratio is replaced by its
    f-divergence score first (f-DPO; see ``rlplug.f_divergence_scores``), as TRL does.

    Metrics: TRL's rewards/* with the rewards beta * log-ratio (summed, not normalized).
    """
    chosen_logratios = batch.chosen_logratios
    rejected_logratios = batch.rejected_logratios
    chosen_scores, rejected_scores = f_divergence_scores(
        chosen_logratios, rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    if normalize_length:
        chosen_lengths = batch.chosen_lengths.clamp(min=1.0)
        gap = chosen_scores / chosen_lengths - rejected_scores / batch.rejected_lengths.clamp(min=1.0)
    else:
        gap = chosen_scores - rejected_scores
    losses = (gap - 1 / (2 * beta)) ** 2
    return losses, paired_reward_metrics(beta * chosen_logratios, beta * rejected_logratios)
