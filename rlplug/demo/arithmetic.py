"""A generated task with a verifiable answer: ``"a+b+c="`` -> the sum, one-digit operands."""

from __future__ import annotations

import itertools
import random

from datasets import Dataset


def all_problems() -> list[dict[str, str]]:
    """Every problem: 1,000 prompts ``"a+b+c="`` with the answer as text."""
    return [
        {"prompt": f"{a}+{b}+{c}=", "answer": str(a + b + c)}
        for a, b, c in itertools.product(range(10), repeat=3)
    ]


def split_problems(seed: int = 0, train_fraction: float = 2 / 3) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A fixed shuffle of all problems, split into training prompts and held-out prompts."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    cut = int(len(problems) * train_fraction)
    return problems[:cut], problems[cut:]


def train_dataset(seed: int = 0) -> Dataset:
    """Training prompts with their ``answer`` column (read by the reward)."""
    return Dataset.from_list(split_problems(seed)[0])


def eval_dataset(seed: int = 0) -> Dataset:
    """Held-out prompts (never trained on) with their ``answer`` column."""
    return Dataset.from_list(split_problems(seed)[1])
