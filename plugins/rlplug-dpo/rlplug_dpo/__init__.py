"""rlplug-dpo: Direct Preference Optimization, the anchor of the preference family."""

from rlplug import Algorithm, hookimpl

from rlplug_dpo.losses import dpo_sigmoid


@hookimpl
def register_preference_losses(register):
    register("dpo_sigmoid", dpo_sigmoid)


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
