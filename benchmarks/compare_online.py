"""Online algorithms side by side on the embedded default: same seed, same step budget.

Each algorithm runs as ``rlplug train --algorithm NAME`` (the built-in tiny model, warmed
up once and cached, on the built-in arithmetic task). Writes ``reward_vs_step.png`` (all
algorithms on one plot), ``results.md`` and ``results.json`` to ``--output-dir``.

    python benchmarks/compare_online.py
    python benchmarks/compare_online.py --algorithms grpo,rloo --max-steps 200 --seed 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlplug.app.report import metric_series
from rlplug.cli import train as rlplug_train

DEFAULT_ALGORITHMS = "grpo,dr_grpo,rloo,reinforce_pp"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default=DEFAULT_ALGORITHMS)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="runs/compare_online")
    return parser.parse_args(argv)


def run_one(algorithm: str, args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    run_dir = output_dir / algorithm
    status = rlplug_train(["--algorithm", algorithm, "--max_steps", str(args.max_steps), "--seed", str(args.seed),
                           "--output_dir", str(run_dir)])
    if status != 0:
        raise SystemExit(f"rlplug train --algorithm {algorithm} failed with status {status}")
    summary = json.loads((run_dir / "rlplug-summary.json").read_text())
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    summary["reward_curve"] = list(zip(*metric_series(history, "reward")))
    return summary


def write_outputs(results: list[dict[str, Any]], args: argparse.Namespace, output_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        if result["reward_curve"]:
            steps, rewards = zip(*result["reward_curve"])
            axis.plot(steps, rewards, label=result["algorithm"])
    axis.set_xlabel("training step")
    axis.set_ylabel("mean training reward per completion")
    axis.set_title(f"built-in arithmetic task, seed {args.seed}, {args.max_steps} steps")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output_dir / "reward_vs_step.png", dpi=120)

    lines = [
        "| algorithm | held-out accuracy before | after | reward first 10% | last 10% | train seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['algorithm']} | {r['eval_before']:.3f} | {r['eval_after']:.3f} | {r['reward_first']:.3f} "
                     f"| {r['reward_last']:.3f} | {r['train_seconds']:.0f} |")
    table = "\n".join(lines)
    (output_dir / "results.md").write_text(table + "\n")
    (output_dir / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = [run_one(name.strip(), args, output_dir) for name in args.algorithms.split(",") if name.strip()]
    print(write_outputs(results, args, output_dir))


if __name__ == "__main__":
    main()
