"""rlplug-2d-dpo: DPO with segment-level, aspect-level preference scores (2D-DPO)."""

from rlplug import Algorithm, hookimpl

from rlplug_2d_dpo.losses import two_d_dpo


@hookimpl
def register_preference_losses(register):
    register("2d_dpo", two_d_dpo)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="2d_dpo",
            trainer="paired_preference",
            preference_loss="2d_dpo",
            config_defaults={"beta": 0.1},
            embedded_defaults={"beta": 0.5},  # as dpo's: the built-in task's pairs carry one segment per digit
            description="2D-DPO: a sigmoid DPO term per segment, each side's log-ratio weighted by the segment's "
            "aspect scores; needs the segment columns (docs/hooks.md).",
        )
    )
