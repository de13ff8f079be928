"""The DPO loss on rlplug's PreferenceBatch. Pure tensor code."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, f_divergence_scores, paired_reward_metrics, preference_loss


@preference_loss(data="paired", needs_reference=True)
def dpo_sigmoid(
    batch: PreferenceBatch, beta: float = 0.1, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al., 2023, "Direct Preference Optimization", Eq. 7), TRL's ``sigmoid``.

    With the implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)):

        L_i = -log sigmoid(r(x, y_w) - r(x, y_l))
            = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

    Log-probs are summed over completion tokens. With ``f_divergence_type`` other than
    ``reverse_kl`` each log-ratio is replaced by its f-divergence score (f-DPO, Wang et al.,
    2023, "Beyond Reverse KL"; see ``rlplug.f_divergence_scores``). Metrics: TRL's rewards/*
    with the rewards beta * log-ratio.
    """
    chosen_logratios = batch.chosen_logratios
    rejected_logratios = batch.rejected_logratios
    chosen_scores, rejected_scores = f_divergence_scores(
        chosen_logratios, rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    losses = -F.logsigmoid(beta * (chosen_scores - rejected_scores))
    return losses, paired_reward_metrics(beta * chosen_logratios, beta * rejected_logratios)
