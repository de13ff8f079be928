"""The supervised warm-up of the tiny model, cached under the user's cache directory.

RL needs a policy that answers some questions right: a random tiny model never samples a
correct sum, so every group has the same reward and GRPO has no signal. A short supervised
warm-up on ~100 labelled problems gives about 0.37 held-out accuracy, and the answer
then ends with EOS. More supervision on the same labels does not help, so later gains
come from the RL signal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from rlplug.demo import arithmetic
from rlplug.demo.tiny import build_char_tokenizer, build_tiny_llama

WARMUP_FORMAT_VERSION = 1
"""Bump when the model, tokenizer or training code changes, so old caches are not reused."""


@dataclass(frozen=True)
class WarmupSettings:
    """What the warm-up trains on and how; all of it is part of the cache key."""

    num_labelled: int = 100
    steps: int = 200
    batch_size: int = 128
    learning_rate: float = 3e-3
    seed: int = 0
    split_seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4

    def cache_key(self) -> str:
        payload = json.dumps({"version": WARMUP_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_root() -> Path:
    """``$RLPLUG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rlplug``, else ``~/.cache/rlplug``."""
    override = os.environ.get("RLPLUG_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rlplug"


def labelled_texts(settings: WarmupSettings = WarmupSettings()) -> list[str]:
    """The warm-up's labelled examples written out, ``"a+b+c=answer"``: the text the model was
    pretrained on (PPO-ptx's pretraining batches on the built-in task)."""
    labelled = arithmetic.split_problems(settings.split_seed)[0][: settings.num_labelled]
    return [example["prompt"] + example["answer"] for example in labelled]


def warmed_up_model_dir(settings: WarmupSettings = WarmupSettings(), *, log: bool = True) -> Path:
    """The directory of the warmed-up tiny model, training and caching it on first use."""
    target = cache_root() / f"tiny-arithmetic-{settings.cache_key()}"
    if (target / "warmup.json").is_file():
        return target
    if log:
        print(f"rlplug: first use, warming up the tiny model (cached in {target})", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".warmup-", dir=target.parent))
    try:
        tokenizer = build_char_tokenizer()
        model = build_tiny_llama(
            tokenizer, hidden_size=settings.hidden_size, num_layers=settings.num_layers,
            num_heads=settings.num_heads, seed=settings.seed,
        )
        labelled = arithmetic.split_problems(settings.split_seed)[0][: settings.num_labelled]
        losses = supervised_warmup(model, tokenizer, labelled, settings)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {"settings": asdict(settings), "final_loss": losses[-1], "version": WARMUP_FORMAT_VERSION}
        (staging / "warmup.json").write_text(json.dumps(record, indent=2))
        try:
            staging.rename(target)
        except OSError:
            if not (target / "warmup.json").is_file():  # not a concurrent writer that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _labelled_batch(
    tokenizer: PreTrainedTokenizerFast, examples: list[dict[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + answer + eos`` ids, attention mask, and labels on answer + eos only."""
    rows, label_rows = [], []
    for example in examples:
        prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        label_rows.append([-100] * len(prompt) + answer)
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, label_row) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(label_row)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask, labels


def supervised_warmup(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    examples: list[dict[str, str]],
    settings: WarmupSettings,
) -> list[float]:
    """Full fine-tuning on ``examples`` (answer tokens and EOS only), AdamW with linear decay.

    Each step draws ``batch_size`` examples with replacement. Returns the loss per step.
    """
    input_ids, attention_mask, labels = _labelled_batch(tokenizer, examples)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / settings.steps)
    model.train()
    losses = []
    for _ in range(settings.steps):
        rows = torch.randint(len(examples), (settings.batch_size,), generator=generator)
        loss = model(input_ids=input_ids[rows], attention_mask=attention_mask[rows], labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses
