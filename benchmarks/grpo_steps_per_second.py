"""Steps/s of rlplug's grpo against TRL's native GRPOTrainer on the same configuration.

Runs alternate (native, rlplug, native, rlplug, ...) after one unmeasured warm-up run of
each; each pair gives a ratio rlplug/native, and the median over pairs is printed:

    rlplug/native steps/s ratio: 0.99 (median of 11 pairs)

Each run trains the tiny local Llama (rlplug.demo.tiny) from the same weights with the same
seed; steps/s is measured from the end of the first optimizer step to the end of the
last, so loading and the first step's one-off costs are excluded. By default the clock is
this process's CPU time (one torch thread), which other processes on a shared machine
disturb far less than elapsed time; ``--clock wall`` measures elapsed time. Either way,
compare the ratio, not the absolute numbers, and prefer a quiet machine.

Usage: python benchmarks/grpo_steps_per_second.py [--pairs 11] [--steps 8] [--lora] [--threads 1] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import PrinterCallback, TrainerCallback, set_seed  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rlplug.trl.build import build_trainer  # noqa: E402
from rlplug.demo.arithmetic import all_problems  # noqa: E402
from rlplug.demo.tiny import save_tiny_model  # noqa: E402


def digit_fraction_reward(completions: list[str], **kwargs: Any) -> list[float]:
    """Fraction of the completion's characters that are digits."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class _StepClock(TrainerCallback):
    def __init__(self, clock: str) -> None:
        self.now = CLOCKS[clock]
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(self.now())

    def steps_per_second(self) -> float:
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


PROMPTS_PER_STEP, NUM_GENERATIONS, MAX_COMPLETION_LENGTH = 16, 8, 16


def config_fields(steps: int, output_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=output_dir, per_device_train_batch_size=PROMPTS_PER_STEP * NUM_GENERATIONS,
        num_generations=NUM_GENERATIONS, max_completion_length=MAX_COMPLETION_LENGTH,
        gradient_accumulation_steps=1, max_steps=steps, learning_rate=1e-3, bf16=False, use_cpu=True,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
    )


def peft_config(lora: bool) -> Any:
    if not lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")


def run_once(kind: str, model_dir: str, steps: int, lora: bool, dataset: Dataset, clock_name: str) -> float:
    clock = _StepClock(clock_name)
    gc.collect()  # start each run with the previous run's garbage gone
    with tempfile.TemporaryDirectory() as output_dir:
        set_seed(0)
        if kind == "native":
            trainer = GRPOTrainer(
                model=model_dir, reward_funcs=[digit_fraction_reward], train_dataset=dataset,
                args=GRPOConfig(loss_type="grpo", **config_fields(steps, output_dir)),
                peft_config=peft_config(lora), callbacks=[clock],
            )
        else:
            trainer = build_trainer(
                "grpo", model=model_dir, reward_funcs=[digit_fraction_reward], train_dataset=dataset,
                peft_config=peft_config(lora), callbacks=[clock], **config_fields(steps, output_dir),
            )
        trainer.remove_callback(PrinterCallback)  # logs are computed as usual, just not printed
        trainer.train()
    return clock.steps_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=11, help="measured (native, rlplug) pairs")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu",
        help="cpu: this process's CPU time (robust on a shared machine); wall: elapsed time",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in all_problems()[:256]])
    with tempfile.TemporaryDirectory() as model_dir:
        save_tiny_model(model_dir)
        for kind in ("native", "rlplug"):  # warm-up, not measured
            run_once(kind, model_dir, args.steps, args.lora, dataset, args.clock)
        ratios = []
        for pair in range(args.pairs):
            native = run_once("native", model_dir, args.steps, args.lora, dataset, args.clock)
            ours = run_once("rlplug", model_dir, args.steps, args.lora, dataset, args.clock)
            ratios.append(ours / native)
            print(f"pair {pair + 1}: native {native:.2f} steps/s, rlplug {ours:.2f} steps/s, ratio {ours / native:.3f}")
    setup = "LoRA" if args.lora else "full fine-tuning"
    print(
        f"config: tiny Llama, {setup}, {PROMPTS_PER_STEP} prompts x {NUM_GENERATIONS} completions of up to "
        f"{MAX_COMPLETION_LENGTH} tokens per step, {args.steps} steps per run, {args.threads} thread(s), "
        f"CPU, {args.clock} clock"
    )
    print(f"rlplug/native steps/s ratio: {statistics.median(ratios):.2f} (median of {len(ratios)} pairs)")


if __name__ == "__main__":
    main()
