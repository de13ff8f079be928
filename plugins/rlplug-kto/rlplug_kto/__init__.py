"""rlplug-kto: Kahneman-Tversky Optimization on unpaired desirable/undesirable completions."""

from rlplug import Algorithm, hookimpl

from rlplug_kto.losses import apo_zero_unpaired, kto


@hookimpl
def register_preference_losses(register):
    register("kto", kto)
    register("apo_zero_unpaired", apo_zero_unpaired)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="kto",
            trainer="unpaired_preference",
            preference_loss="kto",
            description="KTO: each labelled completion's beta-scaled log-ratio against the KL reference point "
            "z_ref, weighted by lambda_D / lambda_U.",
        )
    )
    register(
        Algorithm(
            name="apo_zero_unpaired",
            trainer="unpaired_preference",
            preference_loss="apo_zero_unpaired",
            description="APO-zero on unpaired data: desirable log-ratios up, undesirable down, anchored at the "
            "reference; no KL reference point.",
        )
    )
