"""DPO's loss variants (TRL's DPOTrainer ``loss_type``s) on rlplug's PreferenceBatch. Pure tensor code.

Notation: u_w = log pi(y_w|x) - log pi_ref(y_w|x), u_l likewise for y_l (log-probs summed
over completion tokens), delta = s(u_w) - s(u_l) where s is the f-divergence score
(``f_divergence_type``; s(u) = u for the default reverse KL, see
``rlplug.f_divergence_scores``), eps = ``label_smoothing``, sigma the logistic function.
Every loss logs TRL's rewards/* with the rewards beta * u.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlplug import PreferenceBatch, f_divergence_scores, paired_reward_metrics, preference_loss

Losses = tuple[torch.Tensor, dict[str, torch.Tensor]]


def _rewards(batch: PreferenceBatch, beta: float) -> dict[str, torch.Tensor]:
    return paired_reward_metrics(beta * batch.chosen_logratios, beta * batch.rejected_logratios)


def _delta(batch: PreferenceBatch, f_divergence_type: str, f_alpha_divergence_coef: float) -> torch.Tensor:
    chosen_scores, rejected_scores = f_divergence_scores(
        batch.chosen_logratios, batch.rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    return chosen_scores - rejected_scores


@preference_loss(data="paired", needs_reference=True)
def dpo_hinge(batch: PreferenceBatch, beta: float = 0.1, f_divergence_type: str = "reverse_kl",
              f_alpha_divergence_coef: float = 0.5) -> Losses:
    """Hinge loss on the DPO margin, SLiC's calibration loss with a reference (Zhao et al., 2023,
    "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", Eq. 2; TRL's ``hinge``):

        L_i = max(0, 1 - beta * delta)
    """
    losses = torch.relu(1 - beta * _delta(batch, f_divergence_type, f_alpha_divergence_coef))
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def exo_pair(batch: PreferenceBatch, beta: float = 0.1, label_smoothing: float = 1e-3,
             f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5) -> Losses:
    """EXO for pairs (Ji et al., 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment", Eq. 16; TRL's ``exo_pair``): KL(q || p) between the model's pair distribution
    q = (sigma(beta delta), sigma(-beta delta)) and the smoothed label p = (1 - eps, eps):

        L_i = q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps),  0 < eps < 1 (the paper: 1e-3).
    """
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair needs 0 < label_smoothing < 1 (the EXO paper uses 1e-3); got {label_smoothing}")
    delta = _delta(batch, f_divergence_type, f_alpha_divergence_coef)
    epsilon = torch.tensor(label_smoothing, device=delta.device)
    chosen_q, log_chosen_q = torch.sigmoid(beta * delta), F.logsigmoid(beta * delta)
    rejected_q, log_rejected_q = torch.sigmoid(-beta * delta), F.logsigmoid(-beta * delta)
    losses = chosen_q * (log_chosen_q - torch.log1p(-epsilon)) + rejected_q * (log_rejected_q - torch.log(epsilon))
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def nca_pair(batch: PreferenceBatch, beta: float = 0.1) -> Losses:
    """NCA for pairs (Chen et al., 2024, "Noise Contrastive Alignment of Language Models with
    Explicit Rewards", Eq. 12; TRL's ``nca_pair``), on absolute rewards r = beta * u:

        L_i = -log sigma(r_w) - 1/2 log sigma(-r_w) - 1/2 log sigma(-r_l)
    """
    chosen_rewards = beta * batch.chosen_logratios
    rejected_rewards = beta * batch.rejected_logratios
    losses = -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def dpo_robust(batch: PreferenceBatch, beta: float = 0.1, label_smoothing: float = 0.0,
               f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5) -> Losses:
    """Robust DPO (Chowdhury et al., 2024, "Provably Robust DPO: Aligning Language Models with
    Noisy Feedback", Eq. 6; TRL's ``robust``), unbiased under labels flipped with rate eps:

        L_i = [-(1 - eps) log sigma(beta delta) + eps log sigma(-beta delta)] / (1 - 2 eps),  0 <= eps < 1/2.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_robust needs 0 <= label_smoothing < 0.5 (the flip rate); got {label_smoothing}")
    delta = _delta(batch, f_divergence_type, f_alpha_divergence_coef)
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
    flipped = -label_smoothing * F.logsigmoid(-beta * delta)
    return (clean - flipped) / (1 - 2 * label_smoothing), _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def bco_pair(batch: PreferenceBatch, beta: float = 0.1) -> Losses:
    """BCO for pairs (Jung et al., 2024, "Binary Classifier Optimization for Large Language Model
    Alignment", Eq. 6 without the reward shift; TRL's ``bco_pair``): chosen as class 1,
    rejected as class 0, with r = beta * u:

        L_i = -log sigma(r_w) - log sigma(-r_l)
    """
    chosen_rewards = beta * batch.chosen_logratios
    rejected_rewards = beta * batch.rejected_logratios
    return -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards), _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def sppo_hard(batch: PreferenceBatch, beta: float = 0.1) -> Losses:
    """SPPO with hard win probabilities (Wu et al., 2024, "Self-Play Preference Optimization for
    Language Model Alignment", Eq. 4.7 with P(y_w beats .) = 1, P(y_l beats .) = 0; TRL's ``sppo_hard``):

        L_i = (u_w - 1/(2 beta))^2 + (u_l + 1/(2 beta))^2
    """
    losses = (batch.chosen_logratios - 0.5 / beta) ** 2 + (batch.rejected_logratios + 0.5 / beta) ** 2
    return losses, _rewards(batch, beta)


def _smoothed_logistic(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing


@preference_loss(data="paired", needs_reference=True)
def aot(batch: PreferenceBatch, beta: float = 0.1, label_smoothing: float = 0.0) -> Losses:
    """AOT, paired (Melnyk et al., 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport", Eq. 9; TRL's ``aot``): first-order stochastic dominance of the policy's
    chosen-minus-rejected log-prob gaps over the reference's, by sorting across the batch.
    With m = sort_i(log pi(y_w|x) - log pi(y_l|x)), m_ref = sort_i(log pi_ref(y_w|x) - log pi_ref(y_l|x)),
    d = m - m_ref:

        L_(i) = -(1 - eps) log sigma(beta d_(i)) - eps log sigma(-beta d_(i))

    The i-th loss belongs to the i-th quantile, not to row i (the batch mean is what counts).
    """
    logratios, _ = torch.sort(batch.chosen_logps - batch.rejected_logps, dim=0)
    ref_logratios, _ = torch.sort(batch.ref_chosen_logps - batch.ref_rejected_logps, dim=0)
    return _smoothed_logistic(logratios - ref_logratios, beta, label_smoothing), _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def aot_unpaired(batch: PreferenceBatch, beta: float = 0.1, label_smoothing: float = 0.0) -> Losses:
    """AOT, unpaired (Melnyk et al., 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport", Eq. 8; TRL's ``aot_unpaired``): dominance of the chosen log-ratio distribution
    over the rejected one, with the two sorted independently (the pairing is not used, the
    batch is still TRL's paired batch). With d = sort_i(u_w) - sort_i(u_l):

        L_(i) = -(1 - eps) log sigma(beta d_(i)) - eps log sigma(-beta d_(i))
    """
    chosen_sorted, _ = torch.sort(batch.chosen_logratios, dim=0)
    rejected_sorted, _ = torch.sort(batch.rejected_logratios, dim=0)
    return _smoothed_logistic(chosen_sorted - rejected_sorted, beta, label_smoothing), _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def apo_zero(batch: PreferenceBatch, beta: float = 0.1) -> Losses:
    """APO-zero (D'Oosterlinck et al., 2024, "Anchored Preference Optimization and Contrastive
    Revisions", Eq. 7; TRL's ``apo_zero``): for chosen outputs better than the model's own,
    raise the chosen likelihood and lower the rejected one, each anchored at the reference:

        L_i = 1 - sigma(beta u_w) + sigma(beta u_l)
    """
    losses = 1 - torch.sigmoid(beta * batch.chosen_logratios) + torch.sigmoid(beta * batch.rejected_logratios)
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def apo_down(batch: PreferenceBatch, beta: float = 0.1) -> Losses:
    """APO-down (D'Oosterlinck et al., 2024, "Anchored Preference Optimization and Contrastive
    Revisions", Eq. 8; TRL's ``apo_down``): for chosen outputs worse than the model's own,
    lower the chosen likelihood and the rejected one more:

        L_i = sigma(beta u_w) + 1 - sigma(beta (u_w - u_l))
    """
    chosen = batch.chosen_logratios
    losses = torch.sigmoid(beta * chosen) + (1 - torch.sigmoid(beta * (chosen - batch.rejected_logratios)))
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=True)
def discopop(batch: PreferenceBatch, beta: float = 0.1, discopop_tau: float = 0.05,
             f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5) -> Losses:
    """DiscoPOP, the log-ratio modulated loss (Lu et al., 2024, "Discovering Preference
    Optimization Algorithms with and for Large Language Models", Eq. 5; TRL's ``discopop``).
    With z = beta delta and the mixing weight m = sigma(z / tau), tau = ``discopop_tau``:

        L_i = (1 - m) * (-log sigma(z)) + m * exp(-z)
    """
    if discopop_tau <= 0:
        raise ValueError(f"discopop needs discopop_tau > 0; got {discopop_tau}")
    logits = _delta(batch, f_divergence_type, f_alpha_divergence_coef) * beta
    modulation = torch.sigmoid(logits / discopop_tau)
    # Where m underflows to 0 the exponential term is 0; evaluating exp there at z = 0 keeps a very
    # negative margin from giving inf * 0 = NaN (TRL's form does, below z of about -88). Elsewhere the
    # arithmetic is TRL's, bit for bit.
    exponent_input = torch.where(modulation > 0, logits, torch.zeros_like(logits))
    losses = -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-exponent_input) * modulation
    return losses, _rewards(batch, beta)


@preference_loss(data="paired", needs_reference=False)
def dpo_sft(batch: PreferenceBatch) -> Losses:
    """Supervised fine-tuning on the chosen completions (TRL's ``sft`` loss type; MPO's
    generation term, Wang et al., 2024, "Enhancing the Reasoning Ability of Multimodal Large
    Language Models via Mixed Preference Optimization", Eq. 5):

        L_i = -(sum over chosen tokens of the micro-batch of log pi(y_t|.)) / (number of those tokens)

    the same token-mean NLL for every row. Reads no reference model, logs no rewards.
    """
    return batch.chosen_nll.expand(batch.batch_size), {}


@preference_loss(data="paired", needs_reference=True)
def dpo_sigmoid_norm(batch: PreferenceBatch, beta: float = 0.1, f_divergence_type: str = "reverse_kl",
                     f_alpha_divergence_coef: float = 0.5) -> Losses:
    """Length-normalized DPO (Lambert et al., 2024, "Tulu 3: Pushing Frontiers in Open Language
    Model Post-Training", Eq. 6; TRL's ``sigmoid_norm``): DPO on per-token scores,

        L_i = -log sigma(beta * (s(u_w) / |y_w| - s(u_l) / |y_l|))
    """
    chosen_scores, rejected_scores = f_divergence_scores(
        batch.chosen_logratios, batch.rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    delta = chosen_scores / batch.chosen_lengths.clamp(min=1.0) - rejected_scores / batch.rejected_lengths.clamp(min=1.0)
    return -F.logsigmoid(beta * delta), _rewards(batch, beta)
