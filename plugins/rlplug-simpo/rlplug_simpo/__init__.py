"""rlplug-simpo: Simple Preference Optimization, length-normalized and reference-free."""

from rlplug import Algorithm, hookimpl

from rlplug_simpo.losses import simpo


@hookimpl
def register_preference_losses(register):
    register("simpo", simpo)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="simpo",
            trainer="paired_preference",
            preference_loss="simpo",
            config_defaults={"beta": 2.0},
            description="SimPO: sigmoid loss on the length-normalized log-prob gap minus a margin gamma; "
            "no reference model. beta 2.0, gamma 1.0 (gamma/beta 0.5) by default.",
        )
    )
