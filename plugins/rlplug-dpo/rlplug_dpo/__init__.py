"""rlplug-dpo: Direct Preference Optimization and its loss variants (TRL's DPO ``loss_type``s)."""

from rlplug import Algorithm, hookimpl, weighted_preference_loss

from rlplug_dpo.losses import dpo_sigmoid
from rlplug_dpo.variants import (
    aot,
    aot_unpaired,
    apo_down,
    apo_zero,
    bco_pair,
    discopop,
    dpo_hinge,
    dpo_robust,
    dpo_sft,
    dpo_sigmoid_norm,
    exo_pair,
    nca_pair,
    sppo_hard,
)

# MPO (Wang et al., 2024): TRL's recipe loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0].
mpo = weighted_preference_loss([(dpo_sigmoid, 0.8), (bco_pair, 0.2), (dpo_sft, 1.0)], name="mpo")

# The loss name is the algorithm name; each recipe runs on the paired (DPO) adapter.
VARIANTS = {
    "dpo_hinge": (dpo_hinge, {}, "Hinge loss max(0, 1 - beta * margin) on the DPO log-ratio margin (SLiC-HF)."),
    "exo_pair": (exo_pair, {"label_smoothing": 1e-3},
                 "EXO: KL from the model's pair distribution to the label smoothed by label_smoothing (1e-3)."),
    "nca_pair": (nca_pair, {}, "NCA: absolute rewards, chosen pushed up, both pushed down by half."),
    "dpo_robust": (dpo_robust, {}, "robust DPO: unbiased under preference labels flipped at rate label_smoothing."),
    "bco_pair": (bco_pair, {}, "BCO: chosen and rejected rewards as a binary classifier's logits."),
    "sppo_hard": (sppo_hard, {}, "SPPO (hard): squared distance of the log-ratios from +-1/(2 beta)."),
    "aot": (aot, {}, "AOT: stochastic dominance of sorted policy over sorted reference log-prob gaps."),
    "aot_unpaired": (aot_unpaired, {}, "AOT (unpaired): sorted chosen log-ratios dominate sorted rejected ones."),
    "apo_zero": (apo_zero, {}, "APO-zero: chosen likelihood up, rejected down, each anchored at the reference."),
    "apo_down": (apo_down, {}, "APO-down: chosen likelihood down, rejected down more."),
    "discopop": (discopop, {}, "DiscoPOP: logistic and exponential losses mixed by sigmoid(margin / discopop_tau)."),
    "dpo_sft": (dpo_sft, {}, "SFT on the chosen completions (token-mean NLL); no reference model."),
    "dpo_sigmoid_norm": (dpo_sigmoid_norm, {}, "Length-normalized DPO: the DPO loss on per-token log-ratios."),
    "mpo": (mpo, {}, "MPO: 0.8 DPO (sigmoid) + 0.2 BCO pair + 1.0 SFT on the chosen completions."),
}


@hookimpl
def register_preference_losses(register):
    register("dpo_sigmoid", dpo_sigmoid)
    for name, (loss, _, _) in VARIANTS.items():
        register(name, loss)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="dpo",
            trainer="paired_preference",
            preference_loss="dpo_sigmoid",
            # On the built-in tiny task TRL's beta=0.1 lets the model stop ending answers (EOS); 0.5 learns.
            embedded_defaults={"beta": 0.5},
            description="DPO: -log sigmoid of the beta-scaled difference of chosen and rejected log-ratios.",
        )
    )
    for name, (_, config_defaults, description) in VARIANTS.items():
        register(
            Algorithm(
                name=name,
                trainer="paired_preference",
                preference_loss=name,
                config_defaults=config_defaults,
                embedded_defaults={"beta": 0.5},
                description=description,
            )
        )
    # Built-in task: samples ranked by distance from the true sum (the exact-match reward ties).
    ranked = {"label_rewards": ["arithmetic_distance"], "beta": 0.5}
    register(
        Algorithm(
            name="online_dpo",
            trainer="iterative_preference",
            preference_loss="dpo_sigmoid",
            # Measured on the built-in task: best_vs_frequent in 6 rounds +0.272, best_worst in 3 rounds +0.204.
            config_defaults={"pairing": "best_vs_frequent", "rounds": 6, "refresh_reference": True},
            embedded_defaults=ranked,
            description="Online / iterative DPO: each of 6 rounds samples from the policy, pairs its best scored "
            "completion with its most often sampled worse one, trains dpo_sigmoid; the reference becomes the "
            "previous round's policy.",
        )
    )
    register(
        Algorithm(
            name="curry_dpo",
            trainer="iterative_preference",
            preference_loss="dpo_sigmoid",
            config_defaults={"pairing": "curriculum", "refresh_reference": True},
            embedded_defaults=ranked,
            description="Curry-DPO: ranked samples, best vs each lower rank, stages from the largest rank gap "
            "to the smallest; each stage's reference is the previous stage's policy.",
        )
    )
