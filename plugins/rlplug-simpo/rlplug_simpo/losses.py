"""The SimPO loss on rlplug's PreferenceBatch. Pure tensor code; no reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, paired_reward_metrics, preference_loss


@preference_loss(data="paired", needs_reference=False)
def simpo(
    batch: PreferenceBatch, beta: float = 2.0, simpo_gamma: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al., 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", Eq. 6).

    The reward is the length-normalized log-prob, with a target margin gamma:

        L_i = -log sigmoid(beta / |y_w| * log pi(y_w|x) - beta / |y_l| * log pi(y_l|x) - gamma)

    computed as TRL's CPOTrainer ``simpo`` does: -log sigmoid(beta * (avg_w - avg_l - gamma / beta)).
    ``simpo_gamma`` is gamma (TRL's name). With beta = 1 it is the seeds' formula. No reference
    log-probs are read. Metrics: rewards beta * (mean token log-prob).
    """
    chosen = batch.chosen_logps / batch.chosen_lengths.clamp(min=1.0)
    rejected = batch.rejected_logps / batch.rejected_lengths.clamp(min=1.0)
    logits = (chosen - rejected) - simpo_gamma / beta
    losses = -F.logsigmoid(beta * logits)
    return losses, paired_reward_metrics(beta * chosen, beta * rejected)
