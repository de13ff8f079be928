"""rlplug-kto: Kahneman-Tversky Optimization on unpaired desirable/undesirable completions."""

from rlplug import Algorithm, hookimpl

from rlplug_kto.losses import kto


@hookimpl
def register_preference_losses(register):
    register("kto", kto)


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
