"""rlplug-cpo: Contrastive Preference Optimization, reference-free DPO plus an NLL term."""

from rlplug import Algorithm, hookimpl

from rlplug_cpo.losses import cpo


@hookimpl
def register_preference_losses(register):
    register("cpo", cpo)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="cpo",
            trainer="paired_preference",
            preference_loss="cpo",
            description="CPO: reference-free sigmoid preference loss plus cpo_alpha times the chosen NLL; "
            "no reference model.",
        )
    )
