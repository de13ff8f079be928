"""Scaling out with accelerate: the launcher configs in examples/accelerate/ are valid, and
``accelerate launch -m rlplug train`` with two CPU processes (gloo) trains as one process
does on the same global batch.

Preference runs (dpo, kto) see the same rows per optimizer step in both set-ups, so their
final adapter weights must agree to 1e-6 (DDP averages the two processes' gradients; the
order of that sum is the only difference). Online runs (grpo, rloo) sample their completions
on each process with that process's own random stream, so two processes draw other
completions than one: for them the test checks that the run completes and that logged
metrics cover the global batch (the completion count), not equal weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType
from safetensors.torch import load_file

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "cpu_ddp.yaml": DistributedType.MULTI_GPU,  # the multi-process launcher; the processes run on CPU
    "fsdp2.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}


def test_every_launcher_config_is_valid_and_says_what_it_is():
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    for name, kind in EXPECTED.items():
        config = ClusterConfig.from_yaml_file(str(CONFIGS / name))
        assert config.distributed_type == kind, name
        assert config.num_processes == 2
        text = (CONFIGS / name).read_text()
        assert "LoRA:" in text and "QLoRA:" in text, f"{name} must say which adapters work with it"
    assert ClusterConfig.from_yaml_file(str(CONFIGS / "fsdp2.yaml")).fsdp_config["fsdp_version"] == 2
    assert ClusterConfig.from_yaml_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config["zero_stage"] == 3


def test_negative_control_a_misspelled_key_is_refused(tmp_path):
    broken = yaml.safe_load((CONFIGS / "cpu_ddp.yaml").read_text())
    broken["num_proceses"] = broken.pop("num_processes")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match="num_proceses"):
        ClusterConfig.from_yaml_file(str(path))


# ---- two CPU processes against one ----------------------------------------------------

PREFERENCE = ["--max_steps", "3", "--eval_prompts", "8", "--learning_rate", "1e-3", "--seed", "5"]


LAUNCHERS = {
    "python": [sys.executable, "-m", "rlplug", "train"],
    "accelerate": [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
                   str(CONFIGS / "cpu_ddp.yaml"), "-m", "rlplug", "train"],
    "torchrun": [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                 "-m", "rlplug", "train"],
}


def run(args: list[str], launcher: str, output_dir: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = LAUNCHERS[launcher]
    result = subprocess.run(
        [*command, *args, "--output_dir", str(output_dir), "--torch_threads", "1"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / "adapter_model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,launcher", [("dpo", "accelerate"), ("kto", "torchrun")])
def test_two_processes_train_as_one_on_the_same_global_batch(tmp_path, algorithm, launcher):
    one = tmp_path / "one"
    output = run(["--algorithm", algorithm, *PREFERENCE, "--per_device_train_batch_size", "8"], "python", one)
    two = tmp_path / "two"
    output = run(["--algorithm", algorithm, *PREFERENCE, "--per_device_train_batch_size", "4"], launcher, two)
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    one_process = weights(one)
    assert max_difference(one_process, weights(two)) <= 1e-6, output[-2000:]
    # Negative control: half the global batch in one process is a different run.
    alone = tmp_path / "alone"
    run(["--algorithm", algorithm, *PREFERENCE, "--per_device_train_batch_size", "4"], "python", alone)
    assert max_difference(one_process, weights(alone)) > 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_online_runs_with_two_processes_and_logs_the_global_batch(tmp_path, algorithm):
    output_dir = tmp_path / "two"
    args = ["--algorithm", algorithm, "--max_steps", "2", "--eval_prompts", "8", "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--logging_steps", "1"]
    run(args, "accelerate", output_dir)
    state = json.loads((output_dir / "trainer_state.json").read_text())
    logged = [row for row in state["log_history"] if "num_tokens" in row]
    assert len(logged) == 2
    # Each step: 2 processes x 8 completions of at most 4 tokens, plus the 6-token prompts: the
    # token count covers both processes' 16 completions, more than one process's 8 could make.
    tokens_per_step = logged[1]["num_tokens"] - logged[0]["num_tokens"]
    assert 16 * 6 < tokens_per_step <= 16 * (6 + 4)
    assert (output_dir / "adapter_model.safetensors").exists()
