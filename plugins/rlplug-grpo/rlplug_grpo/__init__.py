"""rlplug-grpo: GRPO, Dr.GRPO, DAPO, BNPO, GSPO, CISPO, SAPO, LUSPO, VESPO and GMPO."""

from rlplug import Algorithm, KLSpec, hookimpl

from rlplug_grpo.advantages import gdpo, group_mean, group_mean_batch_std, group_norm, group_norm_process
from rlplug_grpo.losses import cispo, gmpo, gspo_clip, ppo_clip, sapo, vespo

_NO_KL_BY_DEFAULT = KLSpec(estimator="k3", placement="loss", coef=0.0)


@hookimpl
def register_advantage_estimators(register):
    register("group_norm", group_norm)
    register("group_mean", group_mean)
    register("group_norm_process", group_norm_process)
    register("group_mean_batch_std", group_mean_batch_std)
    register("gdpo", gdpo)


@hookimpl
def register_policy_losses(register):
    register("ppo_clip", ppo_clip)
    register("gspo_clip", gspo_clip)
    register("cispo", cispo)
    register("sapo", sapo)
    register("vespo", vespo)
    register("gmpo", gmpo)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="grpo",
            advantage="group_norm",
            policy_loss="ppo_clip",
            aggregation="sequence_mean_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="GRPO (DeepSeekMath): group-normalized advantages, PPO clip, per-sequence token mean.",
        )
    )
    register(
        Algorithm(
            name="dr_grpo",
            advantage="group_mean",
            policy_loss="ppo_clip",
            aggregation="constant_normalizer",
            kl=_NO_KL_BY_DEFAULT,
            description="Dr.GRPO: no std scaling, constant normalizer, so no length or difficulty bias.",
        )
    )
    register(
        Algorithm(
            name="dapo",
            advantage="group_norm",
            policy_loss="ppo_clip",
            aggregation="global_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            config_defaults={"epsilon_high": 0.28},
            description="DAPO: clip-higher (eps_high=0.28) and a token mean over the whole batch.",
        )
    )
    register(
        Algorithm(
            name="bnpo",
            advantage="group_norm",
            policy_loss="ppo_clip",
            aggregation="local_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="BNPO-style: token mean over each micro-batch.",
        )
    )
    register(
        Algorithm(
            name="gspo",
            advantage="group_norm",
            policy_loss="gspo_clip",
            aggregation="sequence_mean_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            config_defaults={"epsilon": 3e-4, "epsilon_high": 4e-4},
            description="GSPO: clipping on the sequence-level, length-normalized ratio.",
        )
    )
    register(
        Algorithm(
            name="cispo",
            advantage="group_norm",
            policy_loss="cispo",
            aggregation="global_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            config_defaults={"epsilon_high": 5.0},
            description="CISPO (MiniMax-M1): clipped, detached IS weights on a REINFORCE term.",
        )
    )
    register(
        Algorithm(
            name="sapo",
            advantage="group_norm",
            policy_loss="sapo",
            aggregation="sequence_mean_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="SAPO: a smooth temperature-controlled gate on the ratio instead of the hard clip.",
        )
    )
    register(
        Algorithm(
            name="luspo",
            advantage="group_norm",
            policy_loss="ppo_clip",
            aggregation="sequence_sum_mean",
            kl=_NO_KL_BY_DEFAULT,
            config_defaults={"importance_sampling_level": "sequence"},
            description="LUSPO: GSPO's sequence ratio, each sequence's loss scaled by its length.",
        )
    )
    register(
        Algorithm(
            name="vespo",
            advantage="group_norm",
            policy_loss="vespo",
            aggregation="global_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="VESPO: REINFORCE weighted by a Gamma-shaped function of the sequence ratio.",
        )
    )
    register(
        Algorithm(
            name="gmpo",
            advantage="group_norm",
            policy_loss="gmpo",
            aggregation="sequence_mean_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            config_defaults={"epsilon": 0.4, "epsilon_high": 0.4},
            description="GMPO: geometric mean of the token ratios, clipped in log space (exp(+-0.4)).",
        )
    )
