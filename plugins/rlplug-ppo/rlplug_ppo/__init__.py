"""rlplug-ppo: actor-critic algorithms (PPO, A2C, PPO-ptx) with GAE and value losses."""

from rlplug import Algorithm, KLSpec, hookimpl

from rlplug_ppo.gae import gae
from rlplug_ppo.policy_losses import unclipped_pg
from rlplug_ppo.value_losses import clipped_value, huber_value, mse_value

# TRL's former PPOConfig: k1 per token in the reward with kl_coef 0.05.
PPO_KL = KLSpec(estimator="k1", placement="reward", coef=0.05)


@hookimpl
def register_advantage_estimators(register):
    register("gae", gae)


@hookimpl
def register_policy_losses(register):
    register("unclipped_pg", unclipped_pg)


@hookimpl
def register_value_losses(register):
    register("clipped_value", clipped_value)
    register("mse_value", mse_value)
    register("huber_value", huber_value)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="ppo",
            trainer="ppo",
            advantage="gae",
            policy_loss="ppo_clip",
            aggregation="local_token_mean",
            value_loss="clipped_value",
            kl=PPO_KL,
            config_defaults={"num_iterations": 4},
            description=(
                "PPO with a critic (Schulman et al. 2017; Ouyang et al. 2022): GAE over per-token rewards "
                "(KL in the reward), clipped ratio, clipped value loss, num_iterations epochs over the rollout."
            ),
        )
    )
    register(
        Algorithm(
            name="a2c",
            trainer="ppo",
            advantage="gae",
            policy_loss="unclipped_pg",
            aggregation="local_token_mean",
            value_loss="mse_value",
            kl=PPO_KL,
            config_defaults={"num_iterations": 1},
            description="A2C (Mnih et al. 2016): one on-policy pass, critic baseline via GAE, no ratio clip, MSE critic.",
        )
    )
    register(
        Algorithm(
            name="ppo_ptx",
            trainer="ppo",
            advantage="gae",
            policy_loss="ppo_clip",
            aggregation="local_token_mean",
            value_loss="clipped_value",
            kl=PPO_KL,
            config_defaults={"num_iterations": 4, "ptx_coef": 0.1},
            description=(
                "PPO-ptx (InstructGPT, Ouyang et al. 2022): PPO plus ptx_coef * log pi(x) on a batch of "
                "pretraining text each step."
            ),
        )
    )
