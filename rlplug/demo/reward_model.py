"""The built-in task's reward model: a tiny Bradley-Terry scorer of ``a+b+c=`` answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlplug.app.reward_model import train_reward_model
from rlplug.demo.arithmetic import split_problems
from rlplug.demo.arithmetic_preference import paired_preferences, sampled_wrong_answers
from rlplug.demo.tiny import build_char_tokenizer

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


TINY_REWARD_MODEL_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-3, "lr_scheduler_type": "linear", "max_steps": 300, "per_device_train_batch_size": 64,
    "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 50, "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def arithmetic_pairs(problems: list[dict[str, str]], per_prompt: int = 1, seed: int = 0) -> Any:
    """``prompt, chosen, rejected`` rows: each sum against ``per_prompt`` uniformly drawn wrong sums."""
    return paired_preferences(problems, sampled_wrong_answers(problems, per_prompt, seed)).remove_columns("answer")


def tiny_reward_model(seed: int = 0) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``(model, tokenizer, training pairs, RewardConfig defaults)`` for the built-in task."""
    tokenizer = build_char_tokenizer()
    pairs = arithmetic_pairs(split_problems(seed)[0], per_prompt=4, seed=seed)
    return build_tiny_reward_model(tokenizer, seed=seed), tokenizer, pairs, dict(TINY_REWARD_MODEL_DEFAULTS)


def train_tiny_reward_model(output_dir: str | Path, *, seed: int = 0, train_dataset: Any = None, **overrides: Any) -> Path:
    """Train the tiny reward model (on the built-in pairs unless ``train_dataset``) and save it."""
    model, tokenizer, pairs, defaults = tiny_reward_model(seed)
    return train_reward_model(
        output_dir, model=model, train_dataset=pairs if train_dataset is None else train_dataset,
        processing_class=tokenizer, seed=seed, **{**defaults, **overrides},
    )
