"""rlplug-reinforce: REINFORCE, REINFORCE with a baseline, and REINFORCE++."""

from rlplug import Algorithm, KLSpec, hookimpl

from rlplug_reinforce.advantages import reinforce, reinforce_baseline, reinforce_pp, reinforce_pp_baseline
from rlplug_reinforce.losses import policy_gradient

# k1 in the reward is the unbiased KL placement (propagated as return-to-go by REINFORCE++).
_NO_KL_BY_DEFAULT = KLSpec(estimator="k1", placement="reward", coef=0.0)
# REINFORCE++'s KL coefficient: OpenRLHF's default init_kl_coef.
_REINFORCE_PP_KL = KLSpec(estimator="k1", placement="reward", coef=0.01)


@hookimpl
def register_advantage_estimators(register):
    register("reinforce", reinforce)
    register("reinforce_baseline", reinforce_baseline)
    register("reinforce_pp", reinforce_pp)
    register("reinforce_pp_baseline", reinforce_pp_baseline)


@hookimpl
def register_policy_losses(register):
    register("policy_gradient", policy_gradient)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="reinforce",
            advantage="reinforce",
            policy_loss="policy_gradient",
            aggregation="constant_normalizer",
            kl=_NO_KL_BY_DEFAULT,
            description="REINFORCE (Williams 1992): raw return, -A log pi, on-policy; sum over tokens / (B*L_max).",
        )
    )
    register(
        Algorithm(
            name="reinforce_baseline",
            advantage="reinforce_baseline",
            policy_loss="policy_gradient",
            aggregation="constant_normalizer",
            kl=_NO_KL_BY_DEFAULT,
            description="REINFORCE with the group-mean reward as baseline, -A log pi, on-policy.",
        )
    )
    register(
        Algorithm(
            name="reinforce_pp",
            advantage="reinforce_pp",
            policy_loss="policy_gradient",
            aggregation="global_token_mean",
            kl=_REINFORCE_PP_KL,
            description="REINFORCE++: k1 KL in per-token returns (beta 0.01), whitened over the batch's tokens.",
        )
    )
    register(
        Algorithm(
            name="reinforce_pp_baseline",
            advantage="reinforce_pp_baseline",
            policy_loss="policy_gradient",
            aggregation="global_token_mean",
            kl=_REINFORCE_PP_KL,
            description="REINFORCE++-baseline: group-mean baseline, KL-shaped returns, batch whitening.",
        )
    )
