"""rlplug.testing: toy batches, property checks (with broken components they must catch),
temporary registration, recorders and the pytest plugin."""

from importlib.metadata import entry_points
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from rlplug_grpo.advantages import group_mean, group_norm
from rlplug_grpo.losses import cispo, gspo_clip, ppo_clip

import rlplug
from rlplug import Algorithm, hookimpl
from rlplug.core import plugins
from rlplug.components.kl import k3
from rlplug.components.stats import nanstd
from rlplug.core.resolve import bind_component
from rlplug.testing import (
    PropertyCheckFailure,
    check_advantage_estimator,
    check_policy_loss,
    check_preference_loss,
    record_hook_calls,
    spy_component,
    temporary_component,
    temporary_plugin,
)

# ---- toy batches hold the values their docstrings state ---------------------------


def test_toy_rollout_values(toy_rollout):
    assert toy_rollout.rewards.tolist() == [1, 0, 0, 1, 3, 1, 2, 2]
    assert toy_rollout.completion_mask.sum(-1).tolist() == [3, 2, 1, 3, 3, 3, 2, 1]
    assert toy_rollout.grouped(toy_rollout.rewards).mean(1).tolist() == [0.5, 2.0]
    assert group_mean(toy_rollout).tolist() == [0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0]


def test_degenerate_rollouts_are_what_they_say(degenerate_rollouts):
    assert set(degenerate_rollouts) == {
        "group_size_1", "all_equal", "all_nan_group", "some_nan", "all_nan_batch", "interleaved_groups",
    }
    assert degenerate_rollouts["group_size_1"].group_size() == 1
    assert torch.isnan(degenerate_rollouts["all_nan_batch"].rewards).all()
    interleaved = degenerate_rollouts["interleaved_groups"]
    assert group_mean(interleaved).tolist() == [0.0, 1.0, -1.0, -1.0, 1.0, 0.0]


def test_preference_batches_values(toy_preference_batch, toy_unpaired_batch):
    assert toy_preference_batch.chosen_logratios.tolist() == [1.0, 0.0, -2.0]
    assert toy_preference_batch.rejected_logratios.tolist() == [-1.0, 1.0, -2.0]
    assert toy_preference_batch.chosen_nll.item() == 7 / 8
    assert toy_unpaired_batch.logratios.tolist() == [1.0, -1.0, 0.0, 1.0]
    assert toy_unpaired_batch.labels.tolist() == [True, False, True, False]


def test_toy_batches_are_float32_whatever_the_default_dtype(toy_rollout, toy_policy_batch, toy_preference_batch):
    # tests/test_kl_gradients.py sets torch's default dtype to float64 for the whole session
    assert toy_rollout.rewards.dtype == toy_rollout.completion_mask.dtype == torch.float32
    assert {t.dtype for t in (toy_policy_batch.logps, toy_policy_batch.advantages, toy_policy_batch.mask)} == {torch.float32}
    assert toy_preference_batch.chosen_logps.dtype == toy_preference_batch.chosen_nll.dtype == torch.float32


def test_policy_batch_ratio(toy_policy_batch):
    assert torch.equal(toy_policy_batch.logps, toy_policy_batch.old_logps)
    assert toy_policy_batch.advantages.tolist() == [[1.0], [-1.0], [0.5], [0.0]]
    assert toy_policy_batch.mask.sum(-1).tolist() == [3, 2, 1, 3]


# ---- advantage estimators: real ones pass, broken ones are caught --------------------


@pytest.mark.parametrize("estimator", [group_norm, group_mean], ids=["group_norm", "group_mean"])
def test_bundled_estimators_pass(estimator):
    check_advantage_estimator(estimator)


def nan_leaking(rollout):
    """Group mean baseline that forgets nan_to_num: all-NaN groups stay NaN."""
    rewards = rollout.grouped(rollout.rewards)
    return rollout.ungrouped(rewards - torch.nanmean(rewards, dim=1, keepdim=True))


def no_baseline(rollout):
    return torch.nan_to_num(rollout.rewards)


def std_without_epsilon(rollout):
    """Zeroes unscorable rows, but 0/0 on a group of one (std NaN) or of equal rewards stays."""
    rewards = rollout.grouped(rollout.rewards)
    normalized = (rewards - torch.nanmean(rewards, 1, keepdim=True)) / nanstd(rewards, 1).unsqueeze(1)
    return torch.where(rollout.scorable, rollout.ungrouped(normalized), 0.0)


def nan_to_one(rollout):
    return torch.nan_to_num(group_mean(rollout) + torch.isnan(rollout.rewards).float(), nan=1.0)


def contiguous_groups_assumed(rollout):
    """Reads groups from positions (every 4 rows) instead of group ids."""
    rewards = rollout.rewards.view(-1, rollout.group_size())
    return torch.nan_to_num((rewards - torch.nanmean(rewards, 1, keepdim=True)).flatten())


def column_shaped(rollout):
    return group_mean(rollout).unsqueeze(1)


def mutates_input(rollout):
    rollout.rewards.sub_(1.0)
    return group_mean(rollout)


_calls = {"n": 0}


def stateful(rollout):
    _calls["n"] += 1
    return group_mean(rollout) * _calls["n"]


@pytest.mark.parametrize(
    ("broken", "property_named"),
    [
        (nan_leaking, "finite advantages fails on all_nan_group"),
        (no_baseline, r"invariance to a constant reward shift \(\+4.0\) fails on toy_rollout"),
        (std_without_epsilon, "finite advantages fails on group_size_1"),
        (nan_to_one, "advantage 0 for NaN"),
        (contiguous_groups_assumed, "permutation equivariance"),
        (column_shaped, r"shape \(B,\) or \(B, T\) fails on toy_rollout: expected \(8,\) or \(8, 3\), got \(8, 1\)"),
        (mutates_input, "leaves its input unchanged"),
        (stateful, "deterministic"),
    ],
)
def test_broken_estimators_are_caught(broken, property_named):
    with pytest.raises(PropertyCheckFailure, match=property_named):
        check_advantage_estimator(broken)


def test_shift_check_can_be_waived_for_an_estimator_without_baseline():
    check_advantage_estimator(no_baseline, shift_invariant=False)


def test_prepare_feeds_token_rewards_and_the_shift_reaches_them():
    seen = []

    def token_sum_minus_group_mean(rollout):
        seen.append(rollout.token_rewards)
        return group_mean(rollout)  # reads sequence_rewards(): outcome + token rewards

    def outcome_into_first_token(rollout):
        token = torch.zeros_like(rollout.completion_mask)
        token[:, 0] = torch.nan_to_num(rollout.rewards)
        return rollout.__class__(
            rewards=torch.where(rollout.rewards.isnan(), rollout.rewards, torch.zeros_like(rollout.rewards)),
            group_ids=rollout.group_ids, completion_mask=rollout.completion_mask, token_rewards=token,
        )

    check_advantage_estimator(token_sum_minus_group_mean, prepare=outcome_into_first_token)
    assert all(t is not None for t in seen)
    assert any(t[0, 0] == 1.0 + 4.0 for t in seen)  # the +4 shift went into the token rewards


# ---- policy losses -----------------------------------------------------------------


@pytest.mark.parametrize("loss", [ppo_clip, gspo_clip, cispo], ids=["ppo_clip", "gspo_clip", "cispo"])
def test_bundled_policy_losses_pass(loss):
    check_policy_loss(loss)


def ascent_instead_of_descent(logps, old_logps, advantages, mask):
    return torch.exp(logps - old_logps) * advantages, {}


def scalar_loss(logps, old_logps, advantages, mask):
    return -(torch.exp(logps - old_logps) * advantages).mean(), {}


def with_entropy_term(logps, old_logps, advantages, mask):
    return -torch.exp(logps - old_logps) * advantages + 0.01 * logps, {}


def unbounded_ratio(logps, old_logps, advantages, mask):
    return -torch.exp(10 * (logps - old_logps)) * advantages, {}


def bad_metric(logps, old_logps, advantages, mask):
    loss, _ = ppo_clip(logps, old_logps, advantages, mask)
    return loss, {"clipped": loss.mean()}


@pytest.mark.parametrize(
    ("broken", "property_named"),
    [
        (ascent_instead_of_descent, "descent direction follows the advantage"),
        (scalar_loss, r"per_token_loss of shape \(B, T\) or \(B, 1\) fails on ratio exp\(0.0\): got \(\)"),
        (with_entropy_term, r"zero gradient without advantage fails on all advantages 0"),
        (unbounded_ratio, r"finite loss fails on ratio exp\(20.0\)"),
        (bad_metric, "metric 'clipped' has shape"),
    ],
)
def test_broken_policy_losses_are_caught(broken, property_named):
    with pytest.raises(PropertyCheckFailure, match=property_named):
        check_policy_loss(broken)


def test_sequence_only_losses_can_skip_token_advantages():
    def sequence_only(logps, old_logps, advantages, mask):
        if advantages.shape[1] != 1:
            raise ValueError("one advantage per sequence, please")
        return ppo_clip(logps, old_logps, advantages, mask)

    with pytest.raises(ValueError, match="one advantage per sequence"):
        check_policy_loss(sequence_only)
    check_policy_loss(sequence_only, token_advantages=False)


# ---- preference losses -------------------------------------------------------------


def dpo_like(batch, beta=0.1):
    """-log sigmoid(beta * margin), the stable way."""
    losses = -F.logsigmoid(beta * (batch.chosen_logratios - batch.rejected_logratios))
    return losses, {"rewards/margins": (beta * (batch.chosen_logratios - batch.rejected_logratios)).detach()}


def dpo_naive(batch, beta=0.1):
    """-log(sigmoid(x)) overflows to inf at large negative margins."""
    return -torch.log(torch.sigmoid(beta * (batch.chosen_logratios - batch.rejected_logratios))), {}


def kto_like(batch, beta=0.1):
    z = batch.kl_reference.clamp(min=0)
    rewards = beta * (batch.logratios - z)
    return torch.where(batch.labels, 1 - torch.sigmoid(rewards), 1 - torch.sigmoid(-rewards)), {}


def test_preference_losses_pass():
    check_preference_loss(dpo_like)
    check_preference_loss(dpo_like, params={"beta": 0.5})
    check_preference_loss(kto_like, data="unpaired")


def test_exact_dpo_value_on_the_toy_batch(toy_preference_batch):
    losses, _ = dpo_like(toy_preference_batch, beta=0.5)
    expected = [-F.logsigmoid(torch.tensor(m, dtype=torch.float32)).item() for m in (1.0, -0.5, 0.0)]
    assert losses.tolist() == pytest.approx(expected, abs=0, rel=0)


@pytest.mark.parametrize(
    ("broken", "property_named"),
    [
        (dpo_naive, r"finite losses fails on margins x2000"),
        (lambda batch: (dpo_like(batch)[0].unsqueeze(1), {}), r"losses of shape \(3,\) fails on toy batch"),
        (lambda batch: (dpo_like(batch)[0].detach(), {}), "differentiable in the policy log-probs"),
        (lambda batch: (dpo_like(batch)[0], {"m": torch.zeros(2)}), "metric 'm' has shape"),
    ],
)
def test_broken_preference_losses_are_caught(broken, property_named):
    with pytest.raises(PropertyCheckFailure, match=property_named):
        check_preference_loss(broken)


def test_unknown_data_kind_is_refused():
    with pytest.raises(ValueError, match="'paired' or 'unpaired'"):
        check_preference_loss(dpo_like, data="pairs")


# ---- temporary registration ----------------------------------------------------------


def test_register_component_fixture_selects_by_name(register_component):
    register_component("advantage_estimators", "kit_zero", lambda rollout: torch.zeros_like(rollout.rewards))
    registry = rlplug.get_registry()
    assert "kit_zero" in registry.names("advantage_estimators")
    assert registry.source("advantage_estimators", "kit_zero").plugin_name == "rlplug.testing:advantage_estimators:kit_zero"


def test_temporary_component_is_gone_after_the_block():
    recipe = Algorithm(name="kit_recipe", advantage="group_mean", policy_loss="ppo_clip",
                       aggregation="local_token_mean")
    with temporary_component("algorithms", "kit_recipe", recipe):
        assert rlplug.get_registry().get("algorithms", "kit_recipe") is recipe
    assert "kit_recipe" not in rlplug.get_registry().names("algorithms")
    assert "grpo" in rlplug.get_registry().names("algorithms")  # the rest is intact


def test_temporary_registration_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown component kind 'advantages'"):
        with temporary_component("advantages", "x", lambda r: r.rewards):
            pass
    recipe = Algorithm(name="real_name")
    with pytest.raises(ValueError, match="registers under its own name"):
        with temporary_component("algorithms", "other_name", recipe):
            pass


class MisspelledHook:
    @hookimpl
    def register_advantage_estimater(self, register):
        register("never", lambda r: r.rewards)


def test_temporary_plugin_with_a_misspelled_hook_fails_and_leaves_nothing():
    with pytest.raises(Exception, match="register_advantage_estimater"):
        with temporary_plugin(MisspelledHook(), "kit-typo"):
            pass
    assert not plugins.get_plugin_manager().has_plugin("kit-typo")


def test_a_duplicate_name_through_the_kit_is_an_error(register_component):
    register_component("advantage_estimators", "group_norm", group_mean)
    with pytest.raises(rlplug.DuplicateComponentError, match="'group_norm' is registered twice"):
        rlplug.get_registry()


# ---- recorders ---------------------------------------------------------------------


def test_hook_call_recorder_sees_direct_hook_calls(hook_calls):
    registered = []
    plugins.get_plugin_manager().hook.register_kl_estimators(register=lambda name, fn: registered.append(name))
    (call,) = hook_calls.calls_to("register_kl_estimators")
    assert call.implementations == ["rlplug.components.builtin"] and call.exception is None
    assert registered == ["k1", "k2", "k3", "k1_straight_through", "k3_straight_through"]


def test_hook_call_recorder_stops_when_the_block_ends():
    pm = plugins.get_plugin_manager()
    with record_hook_calls(pm) as recorder:
        pm.hook.register_loss_aggregations(register=lambda name, fn: None)
    pm.hook.register_loss_aggregations(register=lambda name, fn: None)
    assert recorder.names() == ["register_loss_aggregations"]


def test_spy_records_calls_and_keeps_signature_and_attributes():
    with spy_component("advantage_estimators", "group_norm") as spy:
        bound = bind_component("advantage_estimators", "group_norm", {"std_epsilon": 0.5})
        rollout = rlplug.testing.toy_rollout()
        result = bound(rollout)
        assert spy.call_count == 1 and spy.calls[0].kwargs == {"std_epsilon": 0.5}
        assert torch.equal(spy.calls[0].result, group_norm(rollout, std_epsilon=0.5))
    with spy_component("kl_estimators", "k3"):
        assert rlplug.get_registry().get("kl_estimators", "k3").kl_gradient == k3.kl_gradient
    assert rlplug.get_registry().get("advantage_estimators", "group_norm") is group_norm  # restored
    assert torch.equal(result, group_norm(rollout, std_epsilon=0.5))


def test_spy_on_an_unknown_name_says_what_exists():
    with pytest.raises(rlplug.UnknownComponentError, match="Did you mean: group_norm"):
        with spy_component("advantage_estimators", "group_nrom"):
            pass


# ---- the pytest plugin ------------------------------------------------------------


def test_pytest_plugin_is_registered_through_the_entry_point(request):
    (entry,) = [ep for ep in entry_points(group="pytest11") if ep.name == "rlplug"]
    assert entry.value == "rlplug.testing.fixtures"
    plugin = request.config.pluginmanager.get_plugin("rlplug")
    assert plugin is not None and plugin.__name__ == "rlplug.testing.fixtures"


def test_tiny_model_fixtures_agree(tiny_model_dir, tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = loaded("1+2=")["input_ids"]
    assert ids == tiny_tokenizer("1+2=")["input_ids"] and len(ids) == 4
    assert tiny_model.config.vocab_size == len(tiny_tokenizer) == 20
    saved = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.equal(saved.lm_head.weight, tiny_model.lm_head.weight)  # same seed, same weights


def test_fake_distribution_fixture_installs_a_loadable_plugin(fake_distribution):
    body = """
        from rlplug import hookimpl

        @hookimpl
        def register_reward_functions(register):
            register("kit_constant", lambda prompts, completions, **kw: [1.0] * len(completions))
    """
    fake_distribution("rlplug-kitfake", "kitfake_module", "kitfake", body, version="0.3")
    source = rlplug.get_registry().source("reward_functions", "kit_constant")
    assert (source.distribution, source.version, source.plugin_name) == ("rlplug-kitfake", "0.3", "kitfake")


# ---- every registered component passes the checks of its kind ---------------------------


def outcome_as_last_step(rollout):
    """The outcome reward moved to a step at each completion's last token (process supervision)."""
    mask = rollout.completion_mask
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & mask.bool()
    token_rewards = torch.where(last, torch.nan_to_num(rollout.rewards).unsqueeze(1), torch.zeros_like(mask))
    outcome = torch.where(rollout.rewards.isnan(), rollout.rewards, torch.zeros_like(rollout.rewards))
    return rollout.__class__(rewards=outcome, group_ids=rollout.group_ids, completion_mask=mask,
                             token_rewards=token_rewards, step_mask=last)


def one_reward_function(rollout):
    """The outcome reward as the only column of rewards_per_func, weight 1 (what GDPO reads)."""
    return replace(rollout, rewards_per_func=rollout.rewards.unsqueeze(1), reward_weights=torch.ones(1))


def with_critic_values(rollout):
    """A critic's values at rollout time, V(s_t) = 0.1 * t on real tokens (what GAE reads)."""
    positions = torch.arange(rollout.completion_mask.shape[1], dtype=torch.float32)
    return replace(rollout, values=0.1 * positions * rollout.completion_mask)


def one_segment_per_row(fields):
    """Each completion as one segment with one aspect scored 1 (what 2D-DPO reads)."""
    from rlplug import SegmentBatch

    column = {name: fields[name].unsqueeze(1) for name in
              ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")}
    rows = column["chosen_logps"].shape[0]
    scores = torch.ones(rows, 1, 1)
    segments = SegmentBatch(**column, chosen_scores=scores, rejected_scores=scores,
                            mask=torch.ones(rows, 1, dtype=torch.bool))
    return {**fields, "segments": segments}


# What a component legitimately differs in; anything else must pass the defaults.
CHECK_OPTIONS = {
    ("advantage_estimators", "reinforce"): {"shift_invariant": False},  # no baseline, by definition
    ("advantage_estimators", "group_norm_process"): {"prepare": outcome_as_last_step},  # reads step rewards
    ("advantage_estimators", "gdpo"): {"prepare": one_reward_function},  # reads per-function rewards
    # reads critic values; its baseline is the critic, not the group, so a reward shift moves it
    ("advantage_estimators", "gae"): {"prepare": with_critic_values, "shift_invariant": False},
    ("preference_losses", "2d_dpo"): {"prepare": one_segment_per_row},  # reads per-segment sums
    ("policy_losses", "sequence_ratio_clip"): {"token_advantages": False},  # one advantage per sequence
    ("policy_losses", "kl_cov"): {"zero_advantage_zero_gradient": False},  # carries its own |log ratio| penalty
}
CHECKS = {
    "advantage_estimators": check_advantage_estimator,
    "policy_losses": check_policy_loss,
    "preference_losses": check_preference_loss,
}


def test_every_registered_component_passes_the_checks_of_its_kind():
    registry = rlplug.get_registry()
    checked, failures = [], []
    for kind, check in CHECKS.items():
        for name in registry.names(kind):
            try:
                check(registry.get(kind, name), **CHECK_OPTIONS.get((kind, name), {}))
            except AssertionError as failure:
                failures.append(f"{kind} {name} ({registry.source(kind, name).distribution}): {failure}")
            checked.append(name)
    assert {"group_norm", "group_mean", "ppo_clip", "gspo_clip", "cispo"} <= set(checked)
    assert not failures, "\n".join(failures)
    assert not set(name for _, name in CHECK_OPTIONS) - set(checked), "an exception names no registered component"
