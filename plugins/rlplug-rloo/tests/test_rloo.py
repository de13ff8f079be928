"""rlplug-rloo: the leave-one-out estimator, its loss and aggregation, and parity with trl.RLOOTrainer."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlplug import AggregationContext, Rollout, get_registry
from rlplug_rloo.advantages import rloo
from rlplug_rloo.losses import sequence_mean, sequence_ratio_clip


def grouped_rollout(groups, dtype=torch.float64, token_rewards=None, completion_mask=None) -> Rollout:
    """A rollout from a list of groups of rewards (None = unscorable), groups laid out contiguously."""
    rewards = torch.tensor([float("nan") if r is None else r for g in groups for r in g], dtype=dtype)
    group_ids = torch.tensor([i for i, g in enumerate(groups) for _ in g])
    if completion_mask is None:
        completion_mask = torch.ones(len(rewards), 2)
    return Rollout(rewards=rewards, group_ids=group_ids, completion_mask=completion_mask, token_rewards=token_rewards)


# ---- rloo: exact values ---------------------------------------------------------------


def test_rloo_hand_computed():
    # Group [0, 3, 6, 3]: the other three average 4, 3, 2, 3.
    assert torch.equal(rloo(grouped_rollout([[0.0, 3.0, 6.0, 3.0]])), torch.tensor([-4.0, 0.0, 4.0, 0.0], dtype=torch.float64))


def test_rloo_leaves_unscorable_out_of_the_baseline():
    # Scorable [1, 3, 5]: baselines (3+5)/2 = 4, (1+5)/2 = 3, (1+3)/2 = 2; the NaN one gets 0.
    advantages = rloo(grouped_rollout([[1.0, None, 3.0, 5.0]]))
    assert torch.equal(advantages, torch.tensor([-3.0, 0.0, 0.0, 3.0], dtype=torch.float64))


def test_rloo_reads_per_token_rewards_summed_into_the_sequence_reward():
    # Sequence rewards: 2 + (-1 + 0) = 1 and 0 + 0.5 (the second token is padding) = 0.5.
    rollout = grouped_rollout(
        [[2.0, 0.0]],
        token_rewards=torch.tensor([[-1.0, 0.0], [0.5, 7.0]], dtype=torch.float64),
        completion_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64),
    )
    assert torch.equal(rloo(rollout), torch.tensor([0.5, -0.5], dtype=torch.float64))


def test_rloo_normalized_over_the_batch():
    # Advantages [-4, 0, 4, 0]: mean 0, Bessel std sqrt(8 * 4/3). rlplug.components.stats.nanstd, like TRL's,
    # forms the Bessel factor count / (count - 1) from integer counts, in float32.
    advantages = rloo(grouped_rollout([[0.0, 3.0, 6.0, 3.0]]), normalize_advantages=True)
    bessel = torch.tensor(4) / torch.tensor(3)
    expected = torch.tensor([-4.0, 0.0, 4.0, 0.0], dtype=torch.float64) / (math.sqrt(8.0 * bessel.item()) + 1e-4)
    torch.testing.assert_close(advantages, expected, rtol=1e-15, atol=0.0)


# ---- rloo: properties -----------------------------------------------------------------

reward_values = st.floats(-100, 100, allow_nan=False, width=64)
group_rewards = st.lists(reward_values, min_size=2, max_size=8)
FLOAT64_EPS = torch.finfo(torch.float64).eps


@st.composite
def equal_size_groups(draw):
    size = draw(st.integers(2, 8))
    return draw(st.lists(st.lists(reward_values, min_size=size, max_size=size), min_size=1, max_size=4))


@settings(max_examples=60, deadline=None)
@given(equal_size_groups())
def test_rloo_sums_to_zero_and_equals_scaled_group_mean(groups):
    size = len(groups[0])
    rollout = grouped_rollout(groups)
    advantages = rloo(rollout).view(len(groups), size)
    rewards = rollout.rewards.view(len(groups), size)
    # Exact in real arithmetic; float64 rounding of sums of `size` rewards bounds the error.
    tolerance = 16 * FLOAT64_EPS * size * (rewards.abs().max().item() + 1.0)
    assert torch.all(advantages.sum(dim=1).abs() <= tolerance)
    expected = size / (size - 1) * (rewards - rewards.mean(dim=1, keepdim=True))
    torch.testing.assert_close(advantages, expected, rtol=0.0, atol=tolerance)


@settings(max_examples=60, deadline=None)
@given(group_rewards, st.floats(-1000, 1000, allow_nan=False, width=64))
def test_shift_invariance_of_rloo_group_norm_and_group_mean(rewards, shift):
    registry = get_registry()
    shifted = [r + shift for r in rewards]
    scale = max(abs(r) for r in rewards + shifted) + 1.0
    for name in ("rloo", "group_norm", "group_mean"):
        estimator = registry.get("advantage_estimators", name)
        before, after = estimator(grouped_rollout([rewards])), estimator(grouped_rollout([shifted]))
        # Exact in real arithmetic; float64 rounding of the shifted sums, which group_norm
        # divides by std + 1e-4, so amplified by up to 1e4 there.
        tolerance = 16 * FLOAT64_EPS * len(rewards) * scale * (1e4 if name == "group_norm" else 1.0)
        torch.testing.assert_close(after, before, rtol=0.0, atol=tolerance, msg=name)


# ---- rloo: degenerate groups ----------------------------------------------------------


def test_rloo_group_of_size_one_gives_zero():
    assert torch.equal(rloo(grouped_rollout([[3.0], [5.0]])), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, -7.3])
def test_rloo_all_equal_rewards_give_zero(value):
    advantages = rloo(grouped_rollout([[value] * 5], dtype=torch.float32))
    assert torch.isfinite(advantages).all()
    # (4v - v... ) / 4 rounds; TRL's operation order keeps a residue of at most a few ulp of v.
    assert advantages.abs().max() <= 4 * torch.finfo(torch.float32).eps * abs(value)


def test_rloo_all_nan_or_single_scorable_gives_zero():
    advantages = rloo(grouped_rollout([[None, None, None], [None, 2.0, None]]))
    assert torch.equal(advantages, torch.zeros(6, dtype=torch.float64))


def test_negative_control_group_mean_is_not_leave_one_out():
    group_mean = get_registry().get("advantage_estimators", "group_mean")
    with pytest.raises(AssertionError):
        assert torch.equal(group_mean(grouped_rollout([[0.0, 3.0, 6.0, 3.0]])), rloo(grouped_rollout([[0.0, 3.0, 6.0, 3.0]])))


# ---- the sequence-level loss and its aggregation --------------------------------------


def test_sequence_ratio_clip_hand_computed():
    # Sequence log-ratios: (-1 - 2) - (-1 - 1.5) = -0.5 (ratio e^-0.5 < 0.8) and 0 (padding ignored).
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -9.0], [-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.0, -1.5], [-0.5, 0.0], [-1.0, -1.5]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    advantages = torch.tensor([[2.0], [3.0], [-2.0]], dtype=torch.float64)
    loss, metrics = sequence_ratio_clip(logps, old, advantages, mask, epsilon=0.2)
    ratio = torch.tensor(-0.5, dtype=torch.float64).exp()
    # A > 0 and ratio below the range: unclipped term; A < 0: clipped at 0.8, no gradient.
    expected = torch.stack([-ratio * 2.0, torch.tensor(-3.0, dtype=torch.float64), torch.tensor(0.8 * 2.0, dtype=torch.float64)])
    torch.testing.assert_close(loss.squeeze(1), expected, rtol=1e-15, atol=0.0)
    assert metrics["clip_ratio/low_mean"].squeeze(1).tolist() == [0.0, 0.0, 1.0]
    loss.sum().backward()
    expected_grad = torch.tensor([[-2.0 * ratio, -2.0 * ratio], [-3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logps.grad, expected_grad, rtol=1e-15, atol=0.0)


def test_sequence_ratio_clip_refuses_per_token_advantages():
    with pytest.raises(ValueError, match=r"one advantage per sequence, \(B, 1\)"):
        sequence_ratio_clip(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))


def test_sequence_mean_hand_computed():
    ctx = AggregationContext(gradient_accumulation_steps=2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert sequence_mean(torch.tensor([[1.0], [2.0], [6.0]]), mask, ctx).item() == 3.0 / 2
    # A per-token loss is summed over each sequence's masked tokens: 3, 1, 5 -> mean 3.
    per_token = torch.tensor([[1.0, 2.0], [1.0, 100.0], [2.0, 3.0]])
    assert sequence_mean(per_token, mask, ctx).item() == 3.0 / 2


# ---- parity with trl.RLOOTrainer ------------------------------------------------------

PARITY_SEED = 7


def parity_reward(prompts, completions, **kwargs):
    """Varied float rewards (digits, length), None for completions holding "=" (unscorable)."""
    out = []
    for completion in completions:
        parity_reward.seen.append(completion)
        out.append(None if "=" in completion else float(sum(ch.isdigit() for ch in completion)) + 0.1 * len(completion))
    return out


parity_reward.seen = []


def parity_config(**extra):
    return dict(
        output_dir="rlplug-output/test-rloo-parity", per_device_train_batch_size=4, gradient_accumulation_steps=2,
        num_generations=4, num_iterations=2, max_completion_length=6, max_steps=4, learning_rate=0.0003,
        optim="sgd", max_grad_norm=0.0, bf16=False, report_to="none", save_strategy="no", seed=PARITY_SEED, **extra,
    )


def parity_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": f"{a}+{b}="} for a in range(10) for b in range(10)])


class Recorder:
    """Per-generation outputs, per-micro-step losses and per-optimizer-step gradients of one run."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.generations, self.losses, self.grads = [], [], []
        recorder = self

        class GradientCallback(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                recorder.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

        trainer.add_callback(GradientCallback())
        training_step, generate = trainer.training_step, trainer._generate_and_score_completions

        def recorded_training_step(*args, **kwargs):
            loss = training_step(*args, **kwargs)
            self.losses.append(loss.detach().clone())
            return loss

        def recorded_generate(*args, **kwargs):
            output = generate(*args, **kwargs)
            self.generations.append({k: v.detach().clone() for k, v in output.items() if torch.is_tensor(v)})
            return output

        trainer.training_step, trainer._generate_and_score_completions = recorded_training_step, recorded_generate


def train_recorded(trainer) -> Recorder:
    from transformers import set_seed

    recorder = Recorder(trainer)
    set_seed(PARITY_SEED)
    trainer.train()
    return recorder


@functools.lru_cache(maxsize=None)
def native_run(model_dir: str, beta: float, normalize: bool) -> Recorder:
    from transformers import AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(**parity_config(normalize_advantages=normalize, **({} if beta is None else {"beta": beta})))
    trainer = RLOOTrainer(
        model=model_dir, reward_funcs=[parity_reward], args=args, train_dataset=parity_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return train_recorded(trainer)


def rlplug_run(model_dir: str, beta: float | None, normalize: bool, **overrides) -> Recorder:
    from transformers import AutoTokenizer

    from rlplug import build_trainer

    trainer = build_trainer(
        "rloo", model=model_dir, reward_funcs=[parity_reward], train_dataset=parity_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        component_params={"advantage": {"normalize_advantages": True}} if normalize else None,
        **overrides, **parity_config(**({} if beta is None else {"beta": beta})),
    )
    return train_recorded(trainer)


def max_differences(native: Recorder, ours: Recorder) -> dict[str, float]:
    assert len(native.generations) == len(ours.generations) == 2
    assert len(native.losses) == len(ours.losses) == 8 and len(native.grads) == len(ours.grads) == 4
    for theirs, mine in zip(native.generations, ours.generations):
        # Same sampled completions, so both trainers score the same batch.
        assert torch.equal(theirs["completion_ids"], mine["completion_ids"])
    return {
        "advantages": max((a["advantages"] - b["advantages"]).abs().max().item() for a, b in zip(native.generations, ours.generations)),
        "loss": max((a - b).abs().item() for a, b in zip(native.losses, ours.losses)),
        "grad": max(
            (a[name] - b[name]).abs().max().item() for a, b in zip(native.grads, ours.grads) for name in a.keys() | b.keys()
        ),
    }


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_rloo_matches_rlootrainer_bitwise(tiny_model_dir, normalize):
    """beta = 1/16, a power of two, makes sum_t(beta * k1_t) == beta * sum_t(k1_t) exactly, so all is bitwise."""
    native = native_run(tiny_model_dir, 0.0625, normalize)
    parity_reward.seen.clear()
    ours = rlplug_run(tiny_model_dir, 0.0625, normalize)
    assert any("=" in c for c in parity_reward.seen), "the batch should hold an unscorable completion"
    assert max_differences(native, ours) == {"advantages": 0.0, "loss": 0.0, "grad": 0.0}
    assert any(g["advantages"].abs().max() > 0 for g in ours.generations)
    assert all(any(v.abs().max() > 0 for v in grads.values()) for grads in ours.grads)


def test_rloo_default_beta_matches_rlootrainer_within_1e_6(tiny_model_dir):
    """At TRL's default beta = 0.05: rlplug keeps the KL per token (token_rewards = -beta * k1_t) and sums it
    into the sequence reward, RLOOTrainer multiplies the summed k1 by beta. sum(beta * k) and beta * sum(k)
    differ by float32 rounding (a few ulp), which can reach advantages, losses and gradients: 1e-6."""
    native = native_run(tiny_model_dir, None, False)
    ours = rlplug_run(tiny_model_dir, None, False)
    differences = max_differences(native, ours)
    assert all(value <= 1e-6 for value in differences.values()), differences


def test_negative_control_group_mean_breaks_rlootrainer_parity(tiny_model_dir):
    native = native_run(tiny_model_dir, 0.0625, False)
    wrong = rlplug_run(tiny_model_dir, 0.0625, False, advantage="group_mean")
    differences = max_differences(native, wrong)
    assert differences["advantages"] > 1e-3 and differences["grad"] > 1e-3


def test_rloo_trains_through_build_trainer(tiny_model_dir):
    """Three steps of the `rloo` recipe on the arithmetic task: advantages sum to 0 within each group."""
    from transformers import AutoTokenizer

    from rlplug import build_trainer
    from rlplug.demo.arithmetic import train_dataset

    trainer = build_trainer(
        "rloo", model=tiny_model_dir, reward_funcs=["arithmetic_exact_match", parity_reward],
        train_dataset=train_dataset(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        output_dir="rlplug-output/test-rloo-train", per_device_train_batch_size=8, num_generations=4,
        max_completion_length=4, max_steps=3, learning_rate=1e-2, bf16=False, report_to="none", save_strategy="no",
    )
    assert trainer.components.advantage.name == "rloo" and trainer.args.beta == 0.05
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    recorder = train_recorded(trainer)
    assert len(recorder.generations) == 3
    for generation in recorder.generations:
        sums = generation["advantages"].view(-1, 4).sum(dim=1)
        assert sums.abs().max() <= 1e-5
    assert all(torch.isfinite(loss) for loss in recorder.losses)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert "kl" in trainer.state.log_history[0]


def test_plugins_are_listed_with_their_components():
    from rlplug.core.plugins import describe_plugins

    rows = {row["name"]: row for row in describe_plugins()}
    assert rows["rlplug-rloo"]["components"] == {
        "advantage_estimators": ["rloo"], "policy_losses": ["sequence_ratio_clip"],
        "loss_aggregations": ["sequence_mean"], "algorithms": ["rloo"],
    }
    assert rows["rlplug-reinforce"]["components"]["algorithms"] == [
        "reinforce", "reinforce_baseline", "reinforce_pp", "reinforce_pp_baseline",
    ]
