"""Compare online algorithms on the embedded arithmetic task: same model, seed and step budget.

Writes, under --output-dir: reward_vs_step.png (training reward of every algorithm against the
step), results.md (a table of final held-out accuracy, greedy decoding) and results.json.

    python benchmarks/compare_online.py            # tiny model, supervised warm-up, 400 steps each
    python benchmarks/compare_online.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 200 --bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_ALGORITHMS = ("grpo", "dr_grpo", "rloo", "reinforce_pp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS), help="comma list of algorithm names")
    parser.add_argument("--model", default=None, help="model id or path (default: rlplug's tiny model, warmed up)")
    parser.add_argument("--warmup-steps", type=int, default=200, help="supervised warm-up of the tiny model (0: none)")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per algorithm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128, help="per_device_train_batch_size (completions)")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts to score (default: all)")
    parser.add_argument("--bf16", action="store_true", help="train in bf16 (off by default: CPU runs)")
    parser.add_argument("--output-dir", default="runs/compare_online")
    return parser.parse_args(argv)


def warm_up(model_dir: str, output_dir: Path, args: argparse.Namespace, examples: int = 100) -> str:
    """Supervised warm-up on a few labelled problems, so that the exact-match reward is not always 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from rlplug.tasks.arithmetic import split_problems

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    problems = split_problems(args.seed)[0][:examples]
    encoded = [tokenizer(p["prompt"] + p["answer"])["input_ids"] + [tokenizer.eos_token_id] for p in problems]
    prompt_lengths = [len(tokenizer(p["prompt"])["input_ids"]) for p in problems]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    for row, (ids, prompt_length) in enumerate(zip(encoded, prompt_lengths)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
    attention_mask = (torch.arange(width) < torch.tensor([len(ids) for ids in encoded]).unsqueeze(1)).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / args.warmup_steps)
    model.train()
    for _ in range(args.warmup_steps):
        batch = torch.randint(len(encoded), (128,))
        loss = model(input_ids=input_ids[batch], attention_mask=attention_mask[batch], labels=labels[batch]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    warm_dir = output_dir / "warm-model"
    model.save_pretrained(warm_dir)
    tokenizer.save_pretrained(warm_dir)
    return str(warm_dir)


def train_one(algorithm: str, model: str, args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer, set_seed

    from rlplug import build_trainer
    from rlplug.tasks.arithmetic import train_dataset

    set_seed(args.seed)
    trainer = build_trainer(
        algorithm, model=model, reward_funcs=["arithmetic_exact_match"], train_dataset=train_dataset(args.seed),
        processing_class=AutoTokenizer.from_pretrained(model), output_dir=str(output_dir / algorithm),
        per_device_train_batch_size=args.batch_size, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, max_steps=args.steps, learning_rate=args.learning_rate,
        logging_steps=1, bf16=args.bf16, report_to="none", save_strategy="no", seed=args.seed,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    curve = [(entry["step"], entry["reward"]) for entry in trainer.state.log_history if "reward" in entry]
    accuracy = held_out_accuracy(trainer.model, trainer.processing_class, args)
    return {"algorithm": algorithm, "reward_curve": curve, "eval_accuracy": accuracy, "train_seconds": seconds}


@torch.no_grad()
def held_out_accuracy(model: Any, tokenizer: Any, args: argparse.Namespace) -> float:
    """Exact-match accuracy of greedy completions on held-out prompts."""
    from rlplug.tasks.arithmetic import split_problems

    problems = split_problems(args.seed)[1][: args.eval_prompts]
    model.eval()
    correct = 0
    for start in range(0, len(problems), 64):
        chunk = problems[start : start + 64]
        inputs = tokenizer([p["prompt"] for p in chunk], return_tensors="pt", padding=True).to(model.device)
        generated = model.generate(
            **inputs, max_new_tokens=args.max_completion_length, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(text.strip() == p["answer"] for text, p in zip(texts, chunk))
    return correct / len(problems)


def write_outputs(results: list[dict[str, Any]], args: argparse.Namespace, output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    window = 20
    for result in results:
        if not result["reward_curve"]:
            continue
        steps, rewards = zip(*result["reward_curve"])
        trailing = [rewards[max(0, i - window + 1) : i + 1] for i in range(len(rewards))]
        axis.plot(steps, [sum(chunk) / len(chunk) for chunk in trailing], label=result["algorithm"])
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(f"training reward ({window}-step trailing mean)")
    axis.set_title(f"arithmetic task, seed {args.seed}, {args.steps} steps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "reward_vs_step.png", dpi=120)

    lines = ["| algorithm | final eval accuracy | last-5-step mean reward | train seconds |", "|---|---|---|---|"]
    for result in results:
        tail = [reward for _, reward in result["reward_curve"][-5:]]
        mean_tail = f"{sum(tail) / len(tail):.3f}" if tail else "-"
        lines.append(
            f"| {result['algorithm']} | {result['eval_accuracy']:.3f} | {mean_tail} | {result['train_seconds']:.1f} |"
        )
    (output_dir / "results.md").write_text("\n".join(lines) + "\n")
    (output_dir / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        from rlplug.tiny import save_tiny_model

        model = str(save_tiny_model(output_dir / "tiny-model", seed=args.seed))
        if args.warmup_steps > 0:
            model = warm_up(model, output_dir, args)
    start_accuracy = held_out_accuracy(AutoModelForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model), args)
    results = [{"algorithm": "starting model", "reward_curve": [], "train_seconds": 0.0, "eval_accuracy": start_accuracy}]
    results += [train_one(name.strip(), model, args, output_dir) for name in args.algorithms.split(",") if name.strip()]
    write_outputs(results, args, output_dir)


if __name__ == "__main__":
    main()
