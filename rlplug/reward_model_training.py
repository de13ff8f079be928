"""Reward-model training with TRL's RewardTrainer (Bradley-Terry loss), and ``rlplug train-rm``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Sequence

def arithmetic_preference_pairs(problems: Sequence[Mapping[str, str]], seed: int = 0, per_prompt: int = 1) -> list[dict[str, str]]:
    """Pairs for the built-in ``a+b+c=`` task: chosen = the sum, rejected = a different sum in 0..27."""
    rng = random.Random(seed)
    pairs = []
    for problem in problems:
        wrong = [str(n) for n in range(28) if str(n) != problem["answer"]]
        for rejected in rng.sample(wrong, per_prompt):
            pairs.append({"prompt": problem["prompt"], "chosen": problem["answer"], "rejected": rejected})
    return pairs


def build_tiny_reward_model(tokenizer: Any, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0) -> Any:
    """A tiny LlamaForSequenceClassification (one label) over ``tokenizer``'s vocabulary, in float32."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, num_labels=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForSequenceClassification(config)


_TINY_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-3, "lr_scheduler_type": "linear", "max_steps": 300, "per_device_train_batch_size": 64,
    "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 50, "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def train_reward_model(
    output_dir: str | Path,
    *,
    model: Any = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    processing_class: Any = None,
    peft_config: Any = None,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Train a reward model with TRL's RewardTrainer and save it (with its tokenizer) to ``output_dir``.

    ``model``: hub id, local path or model (``num_labels=1``); None builds the tiny
    Llama reward model over rlplug.tiny's character tokenizer. ``train_dataset``: a
    ``datasets.Dataset`` of ``prompt``/``chosen``/``rejected`` (or ``chosen``/``rejected``);
    None uses :func:`arithmetic_preference_pairs` on the built-in task's training prompts.
    ``config_overrides`` are ``trl.RewardConfig`` fields. The loss is Bradley-Terry,
    -log sigmoid(r(chosen) - r(rejected)). The result loads with the ``reward_model``
    reward (``{name: reward_model, model: OUTPUT_DIR}``).
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rlplug.tasks.arithmetic import split_problems
    from rlplug.tiny import build_char_tokenizer

    fields: dict[str, Any] = {"seed": seed, "output_dir": str(output_dir), "report_to": "none"}
    if model is None:
        processing_class = processing_class or build_char_tokenizer()
        model = build_tiny_reward_model(processing_class, seed=seed)
        fields.update(_TINY_DEFAULTS)
    if train_dataset is None:
        train_dataset = Dataset.from_list(arithmetic_preference_pairs(split_problems(seed)[0], seed=seed, per_prompt=4))
    fields.update(config_overrides)
    trainer = RewardTrainer(
        model=model, args=RewardConfig(**fields), train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing_class, peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    trainer.processing_class.save_pretrained(str(output_dir))
    return Path(output_dir)


def train_rm_main(argv: Sequence[str] | None = None) -> int:
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
    path = train_reward_model(known.output_dir, model=known.model, train_dataset=dataset, seed=known.seed, **overrides)
    print(f"reward model saved to {path}; use it with rewards: [{{name: reward_model, model: {path}}}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_rm_main())
