"""Run under ``torchrun --nproc_per_node 2``: a short rlplug grpo run on CPU (gloo).

Each rank records, at every generation, its prompts, the gathered per-function rewards
that the advantage estimator saw and the advantages it kept for its own completions, and saves
them to ``OUT/rank{R}.pt``. tests/test_two_processes.py compares them with the
single-process computation.

Usage: torchrun --standalone --nproc_per_node 2 two_process_advantages.py MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from rlplug.trl.build import build_trainer
from rlplug.demo.arithmetic import all_problems

PER_DEVICE_BATCH = 4
NUM_GENERATIONS = 8  # a group is 8 completions, so each group spans both processes


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Fraction of the completion's characters that are digits: varies within a group."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def main(model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    trainer = build_trainer(
        "grpo", model=model_dir, reward_funcs=[digit_fraction_reward],
        train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:16]]),
        output_dir=str(Path(out_dir) / "run"), per_device_train_batch_size=PER_DEVICE_BATCH,
        num_generations=NUM_GENERATIONS, max_completion_length=6, max_steps=2, learning_rate=1e-2,
        bf16=False, use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
    )
    accelerator = trainer.accelerator
    assert accelerator.num_processes == 2, f"run me with 2 processes, got {accelerator.num_processes}"
    records: list[dict[str, Any]] = []
    generate_and_score = trainer._generate_and_score_completions

    def recording(inputs: Any) -> dict[str, Any]:
        output = generate_and_score(inputs)
        records.append(
            {
                "gathered_rewards_per_func": trainer._gathered_rewards_per_func.detach().cpu().clone(),
                "reward_weights": trainer.reward_weights.detach().cpu().clone(),
                "local_advantages": output["advantages"].detach().cpu().clone(),
                "local_prompts": [example["prompt"] for example in inputs],
            }
        )
        return output

    trainer._generate_and_score_completions = recording
    trainer.train()
    torch.save(
        {
            "rank": accelerator.process_index,
            "world_size": accelerator.num_processes,
            "backend": str(accelerator.state.backend),
            "num_generations": NUM_GENERATIONS,
            "records": records,
        },
        Path(out_dir) / f"rank{accelerator.process_index}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
