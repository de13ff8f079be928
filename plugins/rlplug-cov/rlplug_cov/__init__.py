"""rlplug-cov: Clip-Cov and KL-Cov (Cui et al. 2025, arXiv:2505.22617) as policy losses and recipes."""

from rlplug import Algorithm, KLSpec, hookimpl

from rlplug_cov.losses import clip_cov, kl_cov

_NO_KL_BY_DEFAULT = KLSpec(estimator="k3", placement="loss", coef=0.0)


@hookimpl
def register_policy_losses(register):
    register("clip_cov", clip_cov)
    register("kl_cov", kl_cov)


@hookimpl
def register_algorithms(register):
    register(
        Algorithm(
            name="clip_cov",
            advantage="group_norm",
            policy_loss="clip_cov",
            aggregation="global_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="Clip-Cov: PPO clip, plus no gradient for a few random tokens of high log-prob/advantage covariance.",
        )
    )
    register(
        Algorithm(
            name="kl_cov",
            advantage="group_norm",
            policy_loss="kl_cov",
            aggregation="global_token_mean",
            kl=_NO_KL_BY_DEFAULT,
            description="KL-Cov: unclipped surrogate, plus a |log ratio| penalty on the top-covariance tokens.",
        )
    )
