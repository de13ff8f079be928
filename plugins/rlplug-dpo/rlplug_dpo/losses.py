"""The DPO loss on rlplug's PreferenceBatch. Pure tensor code."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, paired_reward_metrics, preference_loss


@preference_loss(data="paired", needs_reference=True)
def dpo_sigmoid(batch: PreferenceBatch, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al., 2023, "Direct Preference Optimization", Eq. 7), TRL's ``sigmoid``.

    With the implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)):

        L_i = -log sigmoid(r(x, y_w) - r(x, y_l))
            = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

    Log-probs are summed over completion tokens. Metrics: TRL's rewards/* with the
    rewards beta * log-ratio.
    """
    chosen_logratios = batch.chosen_logratios
    rejected_logratios = batch.rejected_logratios
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, paired_reward_metrics(beta * chosen_logratios, beta * rejected_logratios)
