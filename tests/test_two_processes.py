"""Two CPU processes (torchrun, gloo) whose groups span both: advantages as in one process.

tests/scripts/two_process_advantages.py trains rlplug grpo for 2 steps with 2 processes,
4 completions per process and 8 completions per group, so every group is split across
the processes. Each rank saves, per generation, the gathered rewards and its local slice
of advantages. Concatenated in rank order, the slices must equal, bitwise, both the
registered ``group_norm`` estimator run once on the gathered rewards and TRL 1.16's own
formula (``GRPOTrainer._generate_and_score_completions``, scale_rewards="group").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlplug.core.plugins import get_registry
from rlplug.core.rollout import Rollout

SCRIPT = Path(__file__).parent / "scripts" / "two_process_advantages.py"


@pytest.fixture(scope="module")
def rank_dumps(tiny_model_dir, tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("two-processes")
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT), tiny_model_dir, str(out_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]


def trl_group_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """TRL 1.16's advantage for scale_rewards="group", line for line."""
    from trl.trainer.utils import nanstd

    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
    std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    advantages = (rewards - mean_grouped_rewards) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def single_process_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int):
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rollout = Rollout(
        rewards=rewards,
        rewards_per_func=rewards_per_func,
        group_ids=torch.arange(rewards.shape[0]) // num_generations,
        completion_mask=torch.ones(rewards.shape[0], 1),
    )
    return get_registry().get("advantage_estimators", "group_norm")(rollout), trl_group_advantages(
        rewards, num_generations
    )


def test_both_ranks_ran_with_gloo_and_groups_span_them(rank_dumps):
    assert [d["rank"] for d in rank_dumps] == [0, 1]
    assert all(d["world_size"] == 2 and "gloo" in d["backend"] for d in rank_dumps)
    for r0, r1 in zip(rank_dumps[0]["records"], rank_dumps[1]["records"]):
        local = r0["local_advantages"].shape[0]
        assert r1["local_advantages"].shape[0] == local < rank_dumps[0]["num_generations"]
        assert r0["gathered_rewards_per_func"].shape[0] == 2 * local
        assert torch.equal(r0["gathered_rewards_per_func"], r1["gathered_rewards_per_func"])
        # In rank order, the prompts come in runs of num_generations: one group, half on each rank.
        prompts = r0["local_prompts"] + r1["local_prompts"]
        size = rank_dumps[0]["num_generations"]
        groups = [prompts[i : i + size] for i in range(0, len(prompts), size)]
        assert all(len(set(group)) == 1 for group in groups), prompts
        assert r0["local_prompts"][0] == r1["local_prompts"][0], "the group does not span both ranks"


def test_concatenated_slices_equal_the_single_process_computation(rank_dumps):
    records = list(zip(rank_dumps[0]["records"], rank_dumps[1]["records"]))
    assert len(records) == 2  # two generations (max_steps=2, one step per generation)
    num_generations = rank_dumps[0]["num_generations"]
    for r0, r1 in records:
        rewards_per_func = r0["gathered_rewards_per_func"]
        estimator, trl = single_process_advantages(rewards_per_func, r0["reward_weights"], num_generations)
        assert rewards_per_func.view(-1, num_generations).std(dim=1).gt(0).all(), "constant rewards in a group"
        concatenated = torch.cat([r0["local_advantages"], r1["local_advantages"]])
        assert torch.equal(concatenated, estimator)
        assert torch.equal(concatenated, trl)
        assert concatenated.abs().gt(0).any()


def test_negative_control_wrong_slice_offset_is_caught(rank_dumps):
    """Had each rank kept the slice at offset 0 (or the ranks' order swapped), the check fails."""
    num_generations = rank_dumps[0]["num_generations"]
    for r0, r1 in zip(rank_dumps[0]["records"], rank_dumps[1]["records"]):
        estimator, _ = single_process_advantages(r0["gathered_rewards_per_func"], r0["reward_weights"], num_generations)
        local = r0["local_advantages"].shape[0]
        assert not torch.equal(torch.cat([estimator[:local], estimator[:local]]), estimator)
        assert not torch.equal(torch.cat([r1["local_advantages"], r0["local_advantages"]]), estimator)
