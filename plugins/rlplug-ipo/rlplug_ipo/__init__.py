"""rlplug-ipo: Identity Preference Optimization, length-normalized (TRL) or on summed log-probs (the paper)."""

from rlplug import Algorithm, hookimpl

from rlplug_ipo.losses import ipo


@hookimpl
def register_preference_losses(register):
    register("ipo", ipo)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="ipo",
            trainer="paired_preference",
            preference_loss="ipo",
            description="IPO: squared distance of the log-ratio gap from 1/(2 beta); length-normalized by default "
            "(TRL's form), `normalize_length: false` for the unnormalized form.",
        )
    )
