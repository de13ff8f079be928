"""Preemption: SIGTERM mid-run saves a checkpoint at the end of the step and exits non-zero;
resuming from it gives the same final weights and KL coefficient as a run never stopped.

The runs are real ``python -m rlplug train`` processes on the built-in task; the signal is
sent from outside, once the run has logged its second step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

STEPS = 10
RUN = [
    "--max_steps", str(STEPS), "--per_device_train_batch_size", "16", "--num_generations", "4",
    "--logging_steps", "1", "--eval_prompts", "16", "--seed", "3",
    "--kl", "{estimator: k1, placement: reward, coef: 0.2, target: 0.0001, horizon: 50}",
]


def rlplug_train(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "rlplug", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / "adapter_model.safetensors"))


def kl_coef(output_dir: Path) -> float:
    return json.loads((output_dir / "rlplug-summary.json").read_text())["components"]["kl"]["coef"]


def terminate_after_second_step(process: subprocess.Popen) -> str:
    """Read the run's output until it logs step 2, then send SIGTERM; return what was read."""
    seen = []
    deadline = time.monotonic() + 600
    for line in process.stdout:
        seen.append(line)
        if "'step': 2" in line or "'epoch'" in line and sum("'epoch'" in s for s in seen) >= 2:
            process.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "the run never logged its second step"
    return "".join(seen)


def test_sigterm_saves_a_checkpoint_and_resume_is_bitwise(tmp_path):
    straight = tmp_path / "straight"
    status, output = finish(rlplug_train([*RUN, "--output_dir", str(straight)]))
    assert status == 0, output[-3000:]

    stopped = tmp_path / "stopped"
    process = rlplug_train([*RUN, "--output_dir", str(stopped)])
    head = terminate_after_second_step(process)
    status, tail = finish(process)
    output = head + tail
    assert status == 128 + signal.SIGTERM, output[-3000:]
    checkpoints = sorted(stopped.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 1, output[-3000:]
    checkpoint = checkpoints[0]
    step = int(checkpoint.name.split("-")[1])
    assert 2 <= step < STEPS
    assert f"stopped by SIGTERM after step {step}; checkpoint saved to {checkpoint}" in output
    assert (checkpoint / "rlplug_kl_controller.json").exists()  # the adaptive KL state is in it

    status, output = finish(rlplug_train([*RUN, "--output_dir", str(stopped), "--resume_from_checkpoint", str(checkpoint)]))
    assert status == 0, output[-3000:]
    resumed, uninterrupted = weights(stopped), weights(straight)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
    assert kl_coef(stopped) == kl_coef(straight) != 0.2

    # Negative control: the checkpoint alone (no resume) is not the final state.
    early = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert not all(torch.equal(early[name], uninterrupted[name]) for name in early)
