"""Preference data from the built-in ``"a+b+c="`` task: the correct sum is preferred to a wrong one.

- Paired rows (DPO, IPO, CPO, SimPO): ``prompt``, ``chosen`` (the sum), ``rejected`` (a
  wrong sum), ``answer``.
- Unpaired rows (KTO): ``prompt``, ``completion``, ``label`` (True for the sum, False for
  the wrong one), ``answer``; the two rows of a prompt are shuffled apart, because KTO
  samples its batches in order.

The wrong answer works best when it is the one the warmed-up model actually gives most
often (:func:`most_common_wrong_answers`); without a model, :func:`deterministic_wrong_answer`.
Completions carry no EOS: TRL appends it.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Literal, Mapping, Sequence

from datasets import Dataset

from rlplug.app.evaluation import generate_completions, greedy_completions
from rlplug.demo.arithmetic import split_problems

Problem = dict[str, str]
MAX_ANSWER = 27  # 9 + 9 + 9
ANSWER_TOKENS = 4  # two digits, EOS, and one to spare


def deterministic_wrong_answer(answer: str) -> str:
    """The off-by-one sum: ``answer + 1``, or ``answer - 1`` for the largest sum."""
    value = int(answer)
    return str(value + 1 if value < MAX_ANSWER else value - 1)


def greedy_accuracy(model: Any, tokenizer: Any, problems: list[Problem], batch_size: int = 512) -> float:
    """Fraction of problems whose greedy completion, stripped, equals the answer."""
    answers = greedy_completions(model, tokenizer, [p["prompt"] for p in problems], ANSWER_TOKENS, batch_size)
    return sum(a.strip() == p["answer"] for a, p in zip(answers, problems, strict=True)) / max(len(problems), 1)


def most_common_wrong_answers(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    *,
    num_samples: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, str]:
    """Prompt -> the wrong answer the model samples most often (ties: first seen).

    A prompt for which no sample was wrong, or every wrong sample was empty, gets
    :func:`deterministic_wrong_answer`.
    """
    samples = generate_completions(
        model, tokenizer, [p["prompt"] for p in problems], ANSWER_TOKENS, batch_size=512, num_samples=num_samples,
        temperature=temperature, seed=seed,
    )
    wrong: dict[str, str] = {}
    for problem, answers in zip(problems, samples, strict=True):
        counts = Counter(a.strip() for a in answers if a.strip() and a.strip() != problem["answer"])
        fallback = deterministic_wrong_answer(problem["answer"])
        wrong[problem["prompt"]] = counts.most_common(1)[0][0] if counts else fallback
    return wrong


def sampled_wrong_answers(problems: list[Problem], per_prompt: int = 1, seed: int = 0) -> dict[str, list[str]]:
    """Prompt -> ``per_prompt`` distinct wrong sums in 0..27, drawn uniformly (no model needed)."""
    rng = random.Random(seed)
    return {
        p["prompt"]: rng.sample([str(n) for n in range(MAX_ANSWER + 1) if str(n) != p["answer"]], per_prompt)
        for p in problems
    }


def _rejected(problem: Problem, wrong_answers: Mapping[str, str | Sequence[str]] | None) -> list[str]:
    chosen = (wrong_answers or {}).get(problem["prompt"]) or deterministic_wrong_answer(problem["answer"])
    rejected = [chosen] if isinstance(chosen, str) else list(chosen)
    if problem["answer"] in rejected:
        raise ValueError(f"a wrong answer for {problem['prompt']!r} equals the correct answer {problem['answer']!r}")
    return rejected


def paired_preferences(
    problems: list[Problem], wrong_answers: Mapping[str, str | Sequence[str]] | None = None
) -> Dataset:
    """Rows ``prompt, chosen, rejected, answer``: the correct sum against a wrong one (one row
    per wrong answer when a prompt has several)."""
    rows = [
        {"prompt": p["prompt"], "chosen": p["answer"], "rejected": rejected, "answer": p["answer"]}
        for p in problems
        for rejected in _rejected(p, wrong_answers)
    ]
    return Dataset.from_list(rows)


def digit_segments(chosen: str, rejected: str) -> dict[str, Any]:
    """2D-DPO's segment columns for one pair of answers, for the character tokenizer (one token a character).

    Same length: one segment per character, one aspect. The chosen digit scores 1; the
    rejected one scores 1 where it differs from the chosen digit and 0 where it is the same,
    so a right digit inside a wrong answer is not pushed down (the loss weighs each side's
    log-ratio by its score, seed 003 Eq. 79). Different lengths: one segment per answer, score 1.
    """
    if chosen and len(chosen) == len(rejected):
        return {
            "chosen_segments": [1] * len(chosen), "rejected_segments": [1] * len(rejected),
            "chosen_segment_scores": [[1.0] for _ in chosen],
            "rejected_segment_scores": [[float(r != c)] for c, r in zip(chosen, rejected)],
        }
    return {
        "chosen_segments": [len(chosen)], "rejected_segments": [len(rejected)],
        "chosen_segment_scores": [[1.0]], "rejected_segment_scores": [[1.0]],
    }


def with_digit_segments(pairs: Dataset) -> Dataset:
    """Paired rows plus :func:`digit_segments` (2D-DPO's columns; other paired losses ignore them)."""
    return pairs.map(lambda row: digit_segments(row["chosen"], row["rejected"]))


def unpaired_preferences(
    problems: list[Problem], wrong_answers: Mapping[str, str] | None = None, seed: int = 0
) -> Dataset:
    """Rows ``prompt, completion, label, answer``: each sum desirable, each wrong sum undesirable, shuffled."""
    rows = []
    for p in problems:
        for completion, label in ((p["answer"], True), *((wrong, False) for wrong in _rejected(p, wrong_answers))):
            rows.append({"prompt": p["prompt"], "completion": completion, "label": label, "answer": p["answer"]})
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)


def preference_dataset(
    data: Literal["paired", "unpaired"],
    *,
    seed: int = 0,
    model: Any = None,
    tokenizer: Any = None,
    num_samples: int = 16,
) -> Dataset:
    """The training split of the task as preference data.

    With ``model`` and ``tokenizer``, the rejected answer is the model's most common wrong
    answer (:func:`most_common_wrong_answers`); without, the deterministic off-by-one.
    The held-out prompts are ``rlplug.demo.arithmetic.split_problems(seed)[1]``.
    """
    if data not in ("paired", "unpaired"):
        raise ValueError(f"preference data must be 'paired' or 'unpaired'; got {data!r}")
    problems = split_problems(seed)[0]
    wrong = None
    if model is not None:
        if tokenizer is None:
            raise ValueError("preference_dataset: a model needs its tokenizer to sample wrong answers")
        wrong = most_common_wrong_answers(model, tokenizer, problems, num_samples=num_samples, seed=seed)
    if data == "paired":
        return paired_preferences(problems, wrong)
    return unpaired_preferences(problems, wrong, seed=seed)


def preference_dataset_for(
    algorithm: Any, *, seed: int = 0, model: Any = None, tokenizer: Any = None, num_samples: int = 16
) -> Dataset:
    """:func:`preference_dataset` in the shape ``algorithm`` trains on (a name or a recipe).

    Paired rows for ``paired_preference`` recipes, unpaired rows for ``unpaired_preference``.
    """
    from rlplug.core.plugins import get_registry
    from rlplug.trl.build import trainer_kind_of

    recipe = get_registry().get("algorithms", algorithm) if isinstance(algorithm, str) else algorithm
    data = trainer_kind_of(recipe).preference_data
    if data is None:
        raise ValueError(f"algorithm {recipe.name!r} is not a preference algorithm (trainer {recipe.trainer!r})")
    return preference_dataset(data, seed=seed, model=model, tokenizer=tokenizer, num_samples=num_samples)
