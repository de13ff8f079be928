"""`rlplug train` on the embedded default with the new objectives: SAPO, LUSPO, VESPO, GMPO, and GRPO with entropy terms."""

import json

import pytest

from rlplug.cli import train as main

SMALL = ["--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4"]


def run(tmp_path, *argv):
    out = tmp_path / "run"
    assert main([*argv, *SMALL, "--output_dir", str(out)]) == 0
    summary = json.loads((out / "rlplug-summary.json").read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return summary, [row for row in history if "loss" in row]


@pytest.mark.parametrize(
    "algorithm, policy_loss, aggregation",
    [
        ("sapo", "sapo", "sequence_mean_token_mean"),
        ("luspo", "ppo_clip", "sequence_sum_mean"),
        ("vespo", "vespo", "global_token_mean"),
        ("gmpo", "gmpo", "sequence_mean_token_mean"),
    ],
)
def test_new_recipes_run_on_the_embedded_default(tmp_path, algorithm, policy_loss, aggregation):
    summary, steps = run(tmp_path, "--algorithm", algorithm)
    assert summary["algorithm"] == algorithm and summary["steps"] == 2
    assert summary["components"]["policy_loss"] == policy_loss
    assert summary["components"]["aggregation"] == aggregation
    assert len(steps) == 2 and all(row["loss"] == row["loss"] for row in steps)  # logged and not NaN


def test_grpo_with_entropy_bonus_and_filter_runs_and_logs_the_coefficient(tmp_path):
    summary, steps = run(tmp_path, "--algorithm", "grpo", "--entropy_coef", "0.01", "--top_entropy_quantile", "0.2")
    assert summary["algorithm"] == "grpo" and summary["steps"] == 2
    assert [row["entropy_coef"] for row in steps] == [0.01, 0.01]
    # Negative control: without the bonus no coefficient is logged.
    _, plain = run(tmp_path / "plain", "--algorithm", "grpo")
    assert all("entropy_coef" not in row for row in plain)
