"""rlplug-rloo: RLOO, REINFORCE with a leave-one-out baseline."""

from rlplug import Algorithm, KLSpec, hookimpl

from rlplug_rloo.advantages import rloo
from rlplug_rloo.losses import sequence_mean, sequence_ratio_clip

# TRL RLOOConfig's default beta; k1 summed over the sequence and subtracted from the reward.
RLOO_KL = KLSpec(estimator="k1", placement="reward", coef=0.05)


@hookimpl
def register_advantage_estimators(register):
    register("rloo", rloo)


@hookimpl
def register_policy_losses(register):
    register("sequence_ratio_clip", sequence_ratio_clip)


@hookimpl
def register_loss_aggregations(register):
    register("sequence_mean", sequence_mean)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="rloo",
            advantage="rloo",
            policy_loss="sequence_ratio_clip",
            aggregation="sequence_mean",
            kl=RLOO_KL,
            description=(
                "RLOO as TRL's RLOOTrainer: leave-one-out baseline, k1 KL summed into the reward "
                "(beta 0.05), clipped sequence-level ratio, mean over sequences."
            ),
        )
    )
