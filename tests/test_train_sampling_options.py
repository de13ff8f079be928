"""`rlplug train` with TRL's reward-scaling and sampling-correction fields, and with dynamic sampling."""

import json


from rlplug.app.report import SUMMARY_FILE
from rlplug.cli import train as main


def run(tmp_path, *argv):
    out = tmp_path / "run"
    assert main([*argv, "--output_dir", str(out)]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return summary, history


def test_scale_rewards_batch_selects_its_estimator(tmp_path):
    summary, _ = run(tmp_path, "--algorithm", "grpo", "--scale_rewards", "batch", "--max_steps", "2")
    assert summary["steps"] == 2
    assert summary["components"]["advantage"] == "group_mean_batch_std"


def test_off_policy_mask_from_trl_field_runs_and_logs(tmp_path):
    summary, history = run(tmp_path, "--algorithm", "grpo", "--off_policy_mask_threshold", "0.5", "--max_steps", "2")
    assert summary["components"]["sampling_corrections"] == ["off_policy_sequence_mask"]
    assert any("off_policy_mask/dropped" in row for row in history)


def test_reward_scaling_contradicting_the_recipe_is_refused(tmp_path, capsys):
    assert main(["--algorithm", "rloo", "--scale_rewards", "batch", "--max_steps", "1", "--output_dir", str(tmp_path)]) != 0
    assert "contradicts" in capsys.readouterr().err


def test_dynamic_sampling_learns_on_the_embedded_task(tmp_path):
    """A shorter learning check than the full demo (see README): 120 DAPO steps with dynamic sampling.

    The gain threshold is the issue's (held-out greedy accuracy up by >= 0.15); every logged
    step must have spent generations on the filter (> group size per kept group means some
    groups were dropped and refilled) and never hit the cap.
    """
    summary, history = run(tmp_path, "--algorithm", "dapo", "--dynamic_sampling", "true", "--max_steps", "120")
    assert summary["components"]["dynamic_sampling"] == {"max_generation_rounds": 4}
    assert summary["eval_after"] - summary["eval_before"] >= 0.15, summary
    logged = [row for row in history if "dynamic_sampling/rounds" in row]
    assert logged and all(row["dynamic_sampling/generations_per_kept_group"] > 8 for row in logged)
