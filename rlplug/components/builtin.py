"""The built-in plugin: the shared components rlplug ships (KL estimators, aggregations, sampling corrections)."""

from rlplug.components import aggregation, kl, sampling_correction
from rlplug.core.hookspecs import hookimpl


@hookimpl
def register_kl_estimators(register):
    register("k1", kl.k1)
    register("k2", kl.k2)
    register("k3", kl.k3)
    register("k1_straight_through", kl.k1_straight_through)
    register("k3_straight_through", kl.k3_straight_through)


@hookimpl
def register_loss_aggregations(register):
    register("sequence_mean_token_mean", aggregation.sequence_mean_token_mean)
    register("local_token_mean", aggregation.local_token_mean)
    register("constant_normalizer", aggregation.constant_normalizer)
    register("global_token_mean", aggregation.global_token_mean)
    register("sequence_sum_mean", aggregation.sequence_sum_mean)


@hookimpl
def register_sampling_corrections(register):
    register("off_policy_sequence_mask", sampling_correction.off_policy_sequence_mask)
    register("sampler_importance_weights", sampling_correction.sampler_importance_weights)
