"""The KTO loss on rlplug's PreferenceBatch. Pure tensor code."""

from __future__ import annotations

import torch

from rlplug import PreferenceBatch, preference_loss, unpaired_reward_metrics


@preference_loss(data="unpaired", needs_reference=True, needs_kl_reference=True)
def kto(
    batch: PreferenceBatch,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    clamp_kl: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7).

    With r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) and the reference point
    z_ref = beta * KL, KL = ``batch.kl_reference`` (the mean log-ratio over mismatched pairs):

        desirable y:   L_i = lambda_D * (1 - sigmoid(r(x, y) - z_ref))
        undesirable y: L_i = lambda_U * (1 - sigmoid(z_ref - r(x, y)))

    ``lambda_D``/``lambda_U`` are ``desirable_weight``/``undesirable_weight``. ``clamp_kl=True``
    (default, TRL's KTOTrainer) clamps the KL estimate at 0, since KL >= 0;
    ``clamp_kl=False`` uses the estimate as the seeds define z_ref, E[beta * KL], negative
    estimates included. z_ref is detached. Metrics: rewards/chosen and rewards/rejected
    (the class means of r) and ``kl`` (the value used, in log-prob units).
    """
    kl = batch.kl_reference
    if kl is None:
        raise ValueError("kto needs batch.kl_reference, the KL reference point from mismatched pairs")
    if clamp_kl:
        kl = kl.clamp(min=0)
    logratios = batch.logratios
    desirable_losses = 1 - torch.sigmoid(beta * (logratios - kl))
    undesirable_losses = 1 - torch.sigmoid(beta * (kl - logratios))
    losses = torch.where(batch.labels, desirable_weight * desirable_losses, undesirable_weight * undesirable_losses)
    metrics = unpaired_reward_metrics(beta * logratios, batch.labels)
    metrics["kl"] = kl.detach()
    return losses, metrics


@preference_loss(data="unpaired", needs_reference=True, needs_kl_reference=False)
def apo_zero_unpaired(
    batch: PreferenceBatch, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APO-zero on unpaired data (D'Oosterlinck et al., 2024, "Anchored Preference Optimization
    and Contrastive Revisions", Eq. 7 with the pair split into its two terms; TRL's KTO
    ``loss_type="apo_zero_unpaired"``). With r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)):

        desirable y:   L_i = lambda_D * (1 - sigmoid(r(x, y)))
        undesirable y: L_i = lambda_U * sigmoid(r(x, y))

    No KL reference point (no mismatched pairs are built). Metrics: rewards/chosen and
    rewards/rejected (the class means of r).
    """
    rewards = beta * batch.logratios
    losses = torch.where(
        batch.labels, desirable_weight * (1 - torch.sigmoid(rewards)), undesirable_weight * torch.sigmoid(rewards)
    )
    return losses, unpaired_reward_metrics(rewards, batch.labels)
