"""The CPO loss on rlplug's PreferenceBatch. Pure tensor code; no reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, paired_reward_metrics, preference_loss


@preference_loss(data="paired", needs_reference=False)
def cpo(
    batch: PreferenceBatch, beta: float = 0.1, cpo_alpha: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CPO (Xu et al., 2024, "Contrastive Preference Optimization", Eqs. 3 and 6), TRL's CPO ``sigmoid``.

    The DPO loss against a uniform reference, plus behaviour cloning on the chosen completions:

        L_i = -log sigmoid(beta * (log pi(y_w|x) - log pi(y_l|x))) + cpo_alpha * NLL

    NLL = ``batch.chosen_nll``, the token-mean negative log-likelihood of the chosen
    completions of the micro-batch, so mean_i L_i = L_prefer + cpo_alpha * L_NLL as in TRL.
    No reference log-probs are read. Metrics: rewards beta * log pi (summed), and ``nll_loss``.
    """
    logits = batch.chosen_logps - batch.rejected_logps
    losses = -F.logsigmoid(beta * logits) + cpo_alpha * batch.chosen_nll
    metrics = paired_reward_metrics(beta * batch.chosen_logps, beta * batch.rejected_logps)
    metrics["nll_loss"] = batch.chosen_nll.detach()
    return losses, metrics
