"""`rlplug train --algorithm NAME --max_steps 2` on the embedded default for every preference
algorithm added for TRL's loss types, and TRL's ``loss_type`` set in an `rlplug train` config."""

import json
import math

import pytest

from rlplug.cli import train as main
from rlplug.trl.trl_loss_types import DPO_LOSS_TYPES

NEW_PAIRED = sorted(set(DPO_LOSS_TYPES.values()) - {"dpo_sigmoid", "ipo"}) + ["mpo"]
# Small overrides to stay fast: 2 steps of 4 pairs, 8 held-out prompts.
FAST = ("--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_prompts", "8")


def run(tmp_path, *argv):
    out = tmp_path / "run"
    assert main([*argv, *FAST, "--output_dir", str(out)]) == 0
    summary = json.loads((out / "rlplug-summary.json").read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [row["loss"] for row in history if "loss" in row]
    assert summary["steps"] == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    return summary, history


@pytest.mark.parametrize("algorithm", [*NEW_PAIRED, "apo_zero_unpaired"])
def test_new_preference_algorithm_trains_on_the_embedded_default(tmp_path, algorithm):
    summary, _ = run(tmp_path, "--algorithm", algorithm)
    assert summary["algorithm"] == algorithm and summary["components"]["preference_loss"] == algorithm


def test_trl_loss_type_in_the_config_picks_the_rlplug_loss(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("algorithm: dpo\nloss_type: [sigmoid, bco_pair, sft]\nloss_weights: [0.8, 0.2, 1.0]\n")
    summary, history = run(tmp_path, "--config", str(config))
    assert summary["components"]["preference_loss"] == "dpo_sigmoid+bco_pair+dpo_sft"


def test_trl_loss_type_flag_picks_the_rlplug_loss(tmp_path):
    summary, _ = run(tmp_path, "--algorithm", "dpo", "--loss_type", "hinge")
    assert summary["components"]["preference_loss"] == "dpo_hinge"
