"""`rlplug train` on the embedded default for every trainer kind, KL placement and family."""

import json

import pytest

from rlplug.app.report import PLOT_FILE, SUMMARY_FILE
from rlplug.cli import train as main


def run(tmp_path, *argv):
    out = tmp_path / "run"
    assert main([*argv, "--output_dir", str(out)]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert (out / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    return summary, history


@pytest.mark.parametrize("algorithm", ["rloo", "reinforce_pp"])
def test_online_families_run_on_the_embedded_default(tmp_path, algorithm):
    summary, history = run(tmp_path, "--algorithm", algorithm, "--max_steps", "6")
    assert summary["algorithm"] == algorithm and summary["steps"] == 6
    assert summary["components"]["kl"]["placement"] == "reward"
    assert all("reward" in row and "kl" in row for row in history if "loss" in row)


@pytest.mark.parametrize(
    "kl, placement",
    [
        ("{estimator: k1, placement: reward, coef: 0.05}", "reward"),
        ("{estimator: k3, placement: loss, coef: 0.05}", "loss"),
        ("{estimator: k2, placement: loss, coef: 0.05, future_kl_correction: true}", "loss"),
    ],
)
def test_each_kl_placement_runs_and_logs_the_kl(tmp_path, kl, placement):
    summary, history = run(tmp_path, "--kl", kl, "--max_steps", "6")
    assert summary["components"]["kl"]["placement"] == placement
    logged = [row for row in history if "kl" in row and "train_runtime" not in row]
    assert len(logged) == 6 and all(row["kl_coef"] == 0.05 for row in logged)
    assert max(row["kl"] for row in logged) > 0


def test_no_kl_logs_no_kl(tmp_path):
    _, history = run(tmp_path, "--kl", "{placement: none}", "--max_steps", "2")
    assert not any("kl" in row for row in history)


@pytest.mark.parametrize("algorithm, data", [("ipo", "paired"), ("simpo", "paired"), ("kto", "unpaired")])
def test_preference_algorithms_run_on_the_embedded_default(tmp_path, algorithm, data):
    summary, history = run(tmp_path, "--algorithm", algorithm, "--max_steps", "4")
    assert summary["algorithm"] == algorithm and summary["components"]["preference_loss"] == algorithm
    assert "margin_first" in summary and "reward_first" not in summary
    assert 0.1 < summary["eval_before"] < 0.9  # the warmed-up model answers some, not all
    assert summary["eval_after"] != summary["eval_before"] or summary["margin_last"] != summary["margin_first"]
    assert any("rewards/margins" in row for row in history)
    assert ("accuracy_first" in summary) == (data == "paired")


def test_preference_runs_are_scored_like_online_runs(tmp_path):
    preference, _ = run(tmp_path / "dpo", "--algorithm", "dpo", "--max_steps", "2")
    online, _ = run(tmp_path / "grpo", "--algorithm", "grpo", "--max_steps", "1")
    assert preference["rewards"] == online["rewards"] == [{"name": "arithmetic_exact_match", "weight": 1.0}]
    assert 0.1 < preference["eval_before"] < 0.9  # the warmed-up model answers some, not all
    assert preference["eval_before"] == online["eval_before"]  # same model, same held-out scoring


@pytest.mark.parametrize("algorithm, value_loss", [("ppo", "clipped_value"), ("a2c", "mse_value")])
def test_actor_critic_runs_on_the_embedded_default(tmp_path, algorithm, value_loss):
    summary, history = run(tmp_path, "--algorithm", algorithm, "--max_steps", "2")
    assert summary["algorithm"] == algorithm and summary["steps"] == 2
    steps = [row for row in history if "critic/value_loss" in row]
    assert len(steps) == 2 and all("reward" in row or "entropy" in row for row in steps)
    # ppo: 4 epochs over one rollout (one explained variance); a2c: a rollout per step.
    assert len([row for row in history if "critic/explained_variance" in row]) == (1 if algorithm == "ppo" else 2)
    assert ("value/clip_frac" in steps[0]) == (value_loss == "clipped_value")
