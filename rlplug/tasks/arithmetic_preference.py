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
from typing import Any, Literal, Mapping

import torch
from datasets import Dataset

from rlplug.tasks.arithmetic import split_problems

Problem = dict[str, str]
MAX_ANSWER = 27  # 9 + 9 + 9


def deterministic_wrong_answer(answer: str) -> str:
    """The off-by-one sum: ``answer + 1``, or ``answer - 1`` for the largest sum."""
    value = int(answer)
    return str(value + 1 if value < MAX_ANSWER else value - 1)


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_samples: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    max_new_tokens: int = 4,
    batch_size: int = 512,
    seed: int = 0,
) -> list[list[str]]:
    """``num_samples`` decoded completions per prompt (stripped), greedy unless ``do_sample``."""
    was_training = model.training
    model.eval()
    expanded = [prompt for prompt in prompts for _ in range(num_samples)]
    texts: list[str] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(expanded), batch_size):
            chunk = expanded[start : start + batch_size]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {key: value.to(model.device) for key, value in encoded.items()}
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_k=0 if do_sample else None,
                top_p=1.0 if do_sample else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            completions = output[:, encoded["input_ids"].shape[1] :]
            texts.extend(text.strip() for text in tokenizer.batch_decode(completions, skip_special_tokens=True))
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def greedy_accuracy(model: Any, tokenizer: Any, problems: list[Problem], batch_size: int = 512) -> float:
    """Fraction of problems whose greedy completion, stripped, equals the answer."""
    answers = generate_answers(model, tokenizer, [p["prompt"] for p in problems], batch_size=batch_size)
    return sum(a[0] == p["answer"] for a, p in zip(answers, problems, strict=True)) / max(len(problems), 1)


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
    samples = generate_answers(
        model, tokenizer, [p["prompt"] for p in problems], num_samples=num_samples, do_sample=True,
        temperature=temperature, seed=seed,
    )
    wrong: dict[str, str] = {}
    for problem, answers in zip(problems, samples, strict=True):
        counts = Counter(a for a in answers if a and a != problem["answer"])
        fallback = deterministic_wrong_answer(problem["answer"])
        wrong[problem["prompt"]] = counts.most_common(1)[0][0] if counts else fallback
    return wrong


def _rejected(problem: Problem, wrong_answers: Mapping[str, str] | None) -> str:
    rejected = (wrong_answers or {}).get(problem["prompt"]) or deterministic_wrong_answer(problem["answer"])
    if rejected == problem["answer"]:
        raise ValueError(f"the wrong answer for {problem['prompt']!r} equals the correct answer {rejected!r}")
    return rejected


def paired_preferences(problems: list[Problem], wrong_answers: Mapping[str, str] | None = None) -> Dataset:
    """Rows ``prompt, chosen, rejected, answer``: the correct sum against a wrong one."""
    rows = [
        {"prompt": p["prompt"], "chosen": p["answer"], "rejected": _rejected(p, wrong_answers), "answer": p["answer"]}
        for p in problems
    ]
    return Dataset.from_list(rows)


def unpaired_preferences(
    problems: list[Problem], wrong_answers: Mapping[str, str] | None = None, seed: int = 0
) -> Dataset:
    """Rows ``prompt, completion, label, answer``: each sum desirable, each wrong sum undesirable, shuffled."""
    rows = []
    for p in problems:
        for completion, label in ((p["answer"], True), (_rejected(p, wrong_answers), False)):
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
    The held-out prompts are ``rlplug.tasks.arithmetic.split_problems(seed)[1]``.
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
    from rlplug.plugins import get_registry
    from rlplug.preference import preference_data_of

    recipe = get_registry().get("algorithms", algorithm) if isinstance(algorithm, str) else algorithm
    data = preference_data_of(recipe)
    if data is None:
        raise ValueError(f"algorithm {recipe.name!r} is not a preference algorithm (trainer {recipe.trainer!r})")
    return preference_dataset(data, seed=seed, model=model, tokenizer=tokenizer, num_samples=num_samples)
