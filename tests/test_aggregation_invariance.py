"""One optimizer step's gradient does not depend on how the same global batch is split.

For every registered loss aggregation, the gradient of one optimizer step over the same B=8
completions (variable lengths, padding) is compared when the batch is split as 1xB, 2xB/2,
4xB/4 by ``per_device_train_batch_size`` and ``gradient_accumulation_steps`` (=
``steps_per_generation``, TRL's default), and across 1 vs 2 processes: simulated, and for real
with DDP on gloo (tests/scripts/two_process_aggregation.py). tests/scripts/aggregation_split.py
mirrors GRPOTrainer's split and scaling (num_items_in_batch over the generation batch and all
processes, losses pre-scaled for accumulation, DDP's mean over processes).

An aggregation that is not invariant by design declares the exact gradient it gives instead
(``SPLIT_DEPENDENT``); one registered without a verdict fails ``test_every_aggregation_has_a_verdict``.
A bug of the known class (TRL #6024, verl #5798, ms-swift #10117) is caught by the negative controls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlplug import get_registry

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from aggregation_split import (  # noqa: E402
    SPLITS, B, Split, fabricated_batch, initial_theta, per_token_loss, rows, step_gradient,
)

REFERENCE_SPLIT = Split(1, 1, B)


def micro_batch_token_means(split: Split) -> torch.Tensor:
    """BNPO's pinned dependence: mean over the P x G micro-batches of each micro-batch's token mean,
    grad (1/(P G)) sum_m grad(sum_{it in m} l_it / sum_{it in m} m_it)."""
    batch, theta = fabricated_batch(), initial_theta().requires_grad_()
    micro_batches = split.processes * split.accumulation
    total = 0.0
    for m in range(micro_batches):
        micro = rows(batch, m * split.per_device, (m + 1) * split.per_device)
        total = total + (per_token_loss(theta, micro) * micro["mask"]).sum() / micro["mask"].sum()
    (total / micro_batches).backward()
    return theta.grad


# name -> the exact gradient it gives for a split, for aggregations that depend on the split by design.
SPLIT_DEPENDENT = {"local_token_mean": micro_batch_token_means}
# Aggregations whose one-step gradient is the same for every split.
INVARIANT = {
    "sequence_mean_token_mean", "constant_normalizer", "global_token_mean", "sequence_mean", "sequence_sum_mean",
}


def aggregations() -> list[str]:
    return get_registry().names("loss_aggregations")


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_every_aggregation_has_a_verdict():
    undeclared = [name for name in aggregations() if name not in INVARIANT and name not in SPLIT_DEPENDENT]
    assert not undeclared, (
        f"declare whether {undeclared} is split-invariant (INVARIANT) or give its exact split dependence "
        "(SPLIT_DEPENDENT) in tests/test_aggregation_invariance.py"
    )


@pytest.mark.parametrize("split", SPLITS[1:], ids=lambda s: s.name)
@pytest.mark.parametrize("name", aggregations())
def test_one_step_gradient_across_splits(name, split):
    aggregation = get_registry().get("loss_aggregations", name)
    gradient = step_gradient(aggregation, split)
    reference = step_gradient(aggregation, REFERENCE_SPLIT)
    if name in SPLIT_DEPENDENT:
        assert max_difference(gradient, SPLIT_DEPENDENT[name](split)) <= 1e-6
        assert max_difference(gradient, reference) > 1e-3  # the dependence is real, not a no-op
    else:
        assert name in INVARIANT, f"{name} has no declared verdict"
        assert max_difference(gradient, reference) <= 1e-6


def test_the_reference_split_is_the_plain_objective():
    """1xB is the formula on the whole batch, e.g. DAPO's sum over all tokens / all tokens."""
    aggregation = get_registry().get("loss_aggregations", "global_token_mean")
    batch, theta = fabricated_batch(), initial_theta().requires_grad_()
    ((per_token_loss(theta, batch) * batch["mask"]).sum() / batch["mask"].sum()).backward()
    assert max_difference(step_gradient(aggregation, REFERENCE_SPLIT), theta.grad) <= 1e-12


# ---- negative controls: the known bug class ------------------------------------------------

def token_mean_without_accumulation_scaling(per_token_loss, mask, ctx):
    """DAPO's normalizer taken per micro-batch and never divided for accumulation."""
    return (per_token_loss * mask).sum() / mask.sum()


def global_token_mean_ignoring_processes(per_token_loss, mask, ctx):
    """DAPO's global count without sharing it among processes (DDP's mean then divides twice)."""
    normalizer = ctx.num_items_in_batch * ctx.gradient_accumulation_steps / ctx.steps_per_generation
    return (per_token_loss * mask).sum() / normalizer


@pytest.mark.parametrize("wrong", [token_mean_without_accumulation_scaling, global_token_mean_ignoring_processes])
def test_split_bugs_are_caught(wrong):
    differences = [max_difference(step_gradient(wrong, split), step_gradient(wrong, REFERENCE_SPLIT))
                   for split in SPLITS[1:]]
    assert max(differences) > 1e-3


# ---- real processes: DDP on gloo -------------------------------------------------------------

@pytest.fixture(scope="module")
def two_process_gradients(tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("two-process-aggregation")
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    script = Path(__file__).parent / "scripts" / "two_process_aggregation.py"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(out_dir)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return torch.load(out_dir / "grads.pt")


@pytest.mark.parametrize("name", aggregations())
def test_two_real_processes_match_the_simulation_and_the_verdict(name, two_process_gradients):
    aggregation = get_registry().get("loss_aggregations", name)
    reference = step_gradient(aggregation, REFERENCE_SPLIT)
    for split in [s for s in SPLITS if s.processes == 2]:
        real = two_process_gradients[name][split.name]
        assert max_difference(real, step_gradient(aggregation, split)) <= 1e-6, split.name
        expected = SPLIT_DEPENDENT[name](split) if name in SPLIT_DEPENDENT else reference
        assert max_difference(real, expected) <= 1e-6, split.name
