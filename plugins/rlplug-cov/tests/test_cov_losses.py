"""Clip-Cov and KL-Cov (rlplug-cov): hand-computed cases, the selection rules, a negative control, and a run.

verl (volcengine/verl, core_algos.py ``clip_cov``/``kl_cov``) is not installed here, so the
formulas are checked on cases worked out by hand from the paper's definitions.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlplug_cov.losses import clip_cov, kl_cov, token_covariance

# Two sequences of three tokens; the last token of the second is padding.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADVANTAGES = torch.tensor([[2.0], [-3.0]])
LOGPS = torch.tensor([[-0.5, -1.0, -4.0], [-2.0, -0.5, -9.0]])


def test_token_covariance_hand_values():
    # mean A over 5 valid tokens: (2*3 - 3*2)/5 = 0 ; mean log pi: (-0.5 - 1 - 4 - 2 - 0.5)/5 = -1.6
    cov = token_covariance(LOGPS, ADVANTAGES, MASK)
    expected = torch.tensor([[2 * 1.1, 2 * 0.6, 2 * -2.4], [-3 * -0.4, -3 * 1.1, -3 * -7.4]])
    assert torch.allclose(cov, expected, atol=1e-6)


def test_kl_cov_penalizes_only_the_top_covariance_token():
    old = LOGPS - torch.tensor([[0.1, -0.2, 0.3], [0.05, 0.4, 0.0]])
    logps = LOGPS.clone().requires_grad_()
    # 5 valid tokens, ratio 0.2 -> k = 1: the largest cov among valid ones is 2.2 (token [0, 0])
    loss, metrics = kl_cov(logps, old, ADVANTAGES, MASK, kl_cov_ratio=0.2, ppo_kl_coef=0.5)
    log_ratio = LOGPS - old
    expected = -ADVANTAGES * torch.exp(log_ratio)
    expected[0, 0] += 0.5 * abs(0.1)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert metrics["kl_cov/selected_fraction"].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    (grad,) = torch.autograd.grad((loss * MASK).sum(), logps)
    assert grad[0, 0].item() == pytest.approx(-2.0 * math.exp(0.1) + 0.5, abs=1e-6)  # d|x|/dx = sign(0.1) = 1
    assert grad[0, 1].item() == pytest.approx(-2.0 * math.exp(-0.2), abs=1e-6)  # not selected: no penalty
    # ratio 0.0002 on 5 tokens still selects one token (k = max(1, floor(rN)))
    _, few = kl_cov(LOGPS, old, ADVANTAGES, MASK)
    assert few["kl_cov/selected_fraction"].sum().item() == 1.0
    with pytest.raises(ValueError, match="kl_cov_ratio"):
        kl_cov(LOGPS, old, ADVANTAGES, MASK, kl_cov_ratio=0.0)


def test_clip_cov_drops_one_eligible_token_and_keeps_ppo_elsewhere():
    # ratios 1 (no PPO clip anywhere); covariances 2.2, 1.2, -4.8 | 1.2, -3.3 ; band (1, 5): three eligible
    logps = LOGPS.clone().requires_grad_()
    torch.manual_seed(0)
    loss, metrics = clip_cov(logps, LOGPS, ADVANTAGES, MASK, clip_cov_ratio=0.2)
    dropped = metrics["clip_cov/dropped_fraction"]
    assert dropped.sum().item() == 1.0
    eligible = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert (dropped * eligible).sum().item() == 1.0  # the dropped token is one of the band's tokens
    ppo = -ADVANTAGES.expand(2, 3)
    assert torch.equal(loss, ppo * (1 - dropped))
    (grad,) = torch.autograd.grad((loss * MASK).sum(), logps)
    assert torch.equal(grad, (ppo * (1 - dropped)) * MASK)
    # Negative control: a band that excludes every covariance still drops nothing.
    _, none = clip_cov(LOGPS, LOGPS, ADVANTAGES, MASK, clip_cov_ratio=0.2, clip_cov_lb=10.0, clip_cov_ub=20.0)
    assert none["clip_cov/dropped_fraction"].sum().item() == 0.0


def test_clip_cov_skips_tokens_ppo_already_clipped():
    # token [0, 0] has the largest covariance but its ratio 1.5 > 1.2 with A > 0: PPO's clip binds there.
    old = LOGPS.clone()
    old[0, 0] -= math.log(1.5)
    torch.manual_seed(0)
    for _ in range(20):
        _, metrics = clip_cov(LOGPS, old, ADVANTAGES, MASK, clip_cov_ratio=0.6)  # floor(0.6*5) = 3 tokens
        dropped = metrics["clip_cov/dropped_fraction"]
        assert dropped[0, 0].item() == 0.0
        assert dropped.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # the two other band tokens
    loss, _ = clip_cov(LOGPS, old, ADVANTAGES, MASK, clip_cov_ratio=0.6)
    assert loss[0, 0].item() == pytest.approx(-2.0 * 1.2)  # PPO's clipped value


def test_clip_cov_and_kl_cov_train_through_the_online_adapter(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from rlplug.trl.build import build_trainer

    def digit_fraction(completions, **kwargs):
        return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]

    data = Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(8)])
    for algorithm in ("clip_cov", "kl_cov"):
        trainer = build_trainer(
            algorithm, model=tiny_model_dir, reward_funcs=[digit_fraction], train_dataset=data,
            output_dir=str(tmp_path / algorithm), per_device_train_batch_size=4, num_generations=4,
            max_completion_length=6, max_steps=1, report_to="none", use_cpu=True, bf16=False,
            logging_steps=1, save_strategy="no", disable_tqdm=True,
        )
        trainer.train()
        logged = [log for log in trainer.state.log_history if "loss" in log]
        assert logged and math.isfinite(logged[0]["loss"])
        metric = "clip_cov/dropped_fraction" if algorithm == "clip_cov" else "kl_cov/selected_fraction"
        assert any(metric in log for log in trainer.state.log_history), trainer.state.log_history
