"""Held-out evaluation: the mean reward of greedy completions.

On the built-in arithmetic task the reward is exact match, so this is greedy accuracy.
On any other dataset it is the task's own metric as its reward functions define it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch


def _prompt_text(tokenizer: Any, prompt: Any) -> str:
    if isinstance(prompt, list):  # conversational: a list of {"role", "content"} messages
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    max_new_tokens: int,
    batch_size: int = 64,
    *,
    num_samples: int = 1,
    temperature: float | None = None,
    seed: int = 0,
) -> list[list[str]]:
    """``num_samples`` completions per prompt (text or conversational), decoded without special
    tokens: greedy when ``temperature`` is None, else sampled from the full distribution at that
    temperature with the torch RNG seeded by ``seed`` (and restored afterwards)."""
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    expanded = [_prompt_text(tokenizer, p) for p in prompts for _ in range(num_samples)]
    sampling = (
        {"do_sample": False}
        if temperature is None
        else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    )
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            for start in range(0, len(expanded), batch_size):
                chunk = expanded[start : start + batch_size]
                encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                output = model.generate(
                    **encoded, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling,
                )
                completion_ids = output[:, encoded["input_ids"].shape[1] :]
                texts.extend(tokenizer.batch_decode(completion_ids, skip_special_tokens=True))
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def greedy_completions(
    model: Any, tokenizer: Any, prompts: Sequence[Any], max_new_tokens: int, batch_size: int = 64
) -> list[str]:
    """The greedy completion of each prompt."""
    return [texts[0] for texts in generate_completions(model, tokenizer, prompts, max_new_tokens, batch_size)]


def mean_greedy_reward(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward_funcs: Sequence[Callable[..., Any]],
    reward_weights: Sequence[float] | None = None,
    *,
    max_new_tokens: int,
    batch_size: int = 64,
) -> float:
    """Mean over ``dataset`` of the weighted reward sum of greedy completions.

    Reward functions get TRL's arguments: ``prompts``, ``completions`` and every other
    dataset column by name. ``None`` means unscorable; a row no function can score is
    left out of the mean (NaN if none is scorable).
    """
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    prompts = [row["prompt"] for row in rows]
    texts = greedy_completions(model, tokenizer, prompts, max_new_tokens, batch_size)
    completions: list[Any] = [
        [{"role": "assistant", "content": text}] if isinstance(p, list) else text for p, text in zip(prompts, texts)
    ]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"} if rows else {}
    weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
    totals: list[float | None] = [None] * len(rows)
    for reward_func, weight in zip(reward_funcs, weights, strict=True):
        scores = reward_func(prompts=prompts, completions=completions, trainer_state=None, **columns)
        for i, score in enumerate(scores):
            if score is not None and not math.isnan(score):
                totals[i] = (totals[i] or 0.0) + weight * float(score)
    scored = [t for t in totals if t is not None]
    return sum(scored) / len(scored) if scored else math.nan
