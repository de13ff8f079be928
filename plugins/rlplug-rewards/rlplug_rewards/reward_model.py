"""``reward_model``: scores from a local sequence-classification model (a Bradley-Terry reward model).

The model is loaded once per (path, device, dtype) and process, kept in eval mode
without gradients, and run in batches under ``torch.no_grad`` on the trainer's device
(accelerate's current device; ``device`` overrides it). The text scored is what TRL's
RewardTrainer trained on: prompt + completion with the tokenizer's EOS appended for
plain text, or the chat template applied to the conversation.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from rlplug_rewards.text import completion_text, prompt_text

_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def trainer_device() -> torch.device:
    """The device of the running accelerate state (the trainer's), else CUDA when present, else CPU."""
    try:
        from accelerate import PartialState

        return PartialState().device
    except Exception:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_reward_model(model: str, device: torch.device | str, dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for ``model`` (a local path or hub id), loaded on first use and then reused."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    key = (str(model), str(device), str(dtype))
    with _LOCK:
        if key not in _LOADED:
            tokenizer = AutoTokenizer.from_pretrained(model)
            kwargs = {"num_labels": 1} | ({"dtype": getattr(torch, dtype)} if dtype else {})
            scorer = AutoModelForSequenceClassification.from_pretrained(model, **kwargs).to(device)
            scorer.eval().requires_grad_(False)
            if scorer.config.pad_token_id is None and tokenizer.pad_token_id is not None:
                scorer.config.pad_token_id = tokenizer.pad_token_id
            _LOADED[key] = (scorer, tokenizer)
        return _LOADED[key]


def clear_loaded_models() -> None:
    """Forget every loaded reward model (frees memory; the next call loads again)."""
    with _LOCK:
        _LOADED.clear()


def _texts(prompts: list[Any], completions: list[Any], tokenizer: Any, append_eos: bool) -> list[str]:
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(prompt, list) and isinstance(completion, list) and getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template(prompt + completion, tokenize=False))
            continue
        text = prompt_text(prompt) + completion_text(completion)
        eos = tokenizer.eos_token
        if append_eos and eos and not text.endswith(eos):
            text += eos
        texts.append(text)
    return texts


def reward_model(
    prompts: list[Any], completions: list[Any], *, model: str, batch_size: int = 32, max_length: int | None = None,
    append_eos: bool = True, device: str | None = None, dtype: str | None = None, **kwargs: Any,
) -> list[float | None]:
    """The reward model's scalar score (logit 0) for prompt + completion.

    Reads no dataset column. ``model``: a local directory or hub id of a
    sequence-classification model with one label (``rlplug.app.reward_model.train_reward_model``
    makes one). Texts are right-padded, so each score does not depend on the batch.
    """
    if batch_size <= 0:
        raise ValueError(f"reward_model: batch_size must be > 0, got {batch_size}")
    scorer, tokenizer = load_reward_model(model, device or trainer_device(), dtype)
    texts = _texts(prompts, completions, tokenizer, append_eos)
    scores: list[float | None] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                truncation=max_length is not None, max_length=max_length,
            ).to(scorer.device)
            scores.extend(scorer(**batch).logits[:, 0].float().tolist())
    return scores
