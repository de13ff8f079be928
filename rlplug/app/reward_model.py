"""Reward-model training with TRL's RewardTrainer (Bradley-Terry loss), and ``rlplug train-rm``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rlplug.app.builtin_task import BuiltinTask, require


def train_reward_model(
    output_dir: str | Path,
    *,
    model: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    processing_class: Any = None,
    peft_config: Any = None,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Train a reward model with TRL's RewardTrainer and save it (with its tokenizer) to ``output_dir``.

    ``model``: hub id, local path or model (``num_labels=1``). ``train_dataset``: a
    ``datasets.Dataset`` of ``prompt``/``chosen``/``rejected`` (or ``chosen``/``rejected``).
    ``config_overrides`` are ``trl.RewardConfig`` fields. The loss is Bradley-Terry,
    -log sigmoid(r(chosen) - r(rejected)). The result loads with the ``reward_model``
    reward (``{name: reward_model, model: OUTPUT_DIR}``).
    """
    from trl import RewardConfig, RewardTrainer

    fields: dict[str, Any] = {"seed": seed, "output_dir": str(output_dir), "report_to": "none", **config_overrides}
    trainer = RewardTrainer(
        model=model, args=RewardConfig(**fields), train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing_class, peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    trainer.processing_class.save_pretrained(str(output_dir))
    return Path(output_dir)


def train_rm_main(argv: Sequence[str] | None = None, builtin: BuiltinTask | None = None) -> int:
    """``rlplug train-rm``: ``--output_dir DIR [--model ID] [--dataset PATH_OR_ID] [--<RewardConfig field> VALUE ...]``.

    ``--dataset`` is a JSON/JSONL file or a ``datasets`` id with ``chosen``/``rejected``
    (and optionally ``prompt``) columns; without it the built-in arithmetic pairs are used.
    """
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="rlplug train-rm", description=train_rm_main.__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default=None, help="hub id or local path; default: the tiny reward model")
    parser.add_argument("--dataset", default=None, help="JSON/JSONL file or datasets id of preference pairs")
    parser.add_argument("--dataset_split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    known, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or any(not key.startswith("--") for key in rest[::2]):
        parser.error(f"extra arguments must be `--field value` pairs of trl.RewardConfig, got {' '.join(rest)}")
    overrides = {key[2:]: yaml.safe_load(value) for key, value in zip(rest[::2], rest[1::2])}
    dataset = None
    if known.dataset is not None:
        from datasets import load_dataset

        if known.dataset.endswith((".json", ".jsonl")):
            dataset = load_dataset("json", data_files=known.dataset, split=known.dataset_split)
        else:
            dataset = load_dataset(known.dataset, split=known.dataset_split)
    model, tokenizer = known.model, None
    if model is None:
        model, tokenizer, pairs, defaults = require(builtin, "--model").reward_model(known.seed)
        dataset = pairs if dataset is None else dataset
        overrides = {**defaults, **overrides}
    elif dataset is None:
        dataset = require(builtin, "--dataset").reward_model(known.seed)[2]
    path = train_reward_model(
        known.output_dir, model=model, train_dataset=dataset, processing_class=tokenizer, seed=known.seed, **overrides
    )
    print(f"reward model saved to {path}; use it with rewards: [{{name: reward_model, model: {path}}}]")
    return 0
