r"""``accuracy_math``: is the completion's final answer equal to the dataset's answer?

The rule-based accuracy reward of DeepSeek-R1 (arXiv:2501.12948, section 2.2.2), with
the answer compared by value. Extraction, first match wins:

1. the content of the last ``<answer>…</answer>`` (configurable tag; nested tags are
   dropped, so ``<answer><answer>5</answer></answer>`` reads ``5``);
2. inside it (or, without tags, anywhere) the last ``\boxed{…}`` / ``\fbox{…}``;
3. with tags, the tag content itself; without tags, the whole completion when it reads
   as a number, else the last number in it.

Normalization: whitespace is removed, thousands separators ``1,000`` and ``1\,000`` are
dropped, a leading ``$`` and a trailing ``%`` or ``.`` are dropped, ``\frac{a}{b}`` is
``a/b``. When both sides read as numbers (integers, decimals, fractions ``a/b``,
exponents) they are compared exactly as rationals, so ``0.5 == 1/2`` and
``1,000 == 1000.0``. A tagged answer that is not a number is compared by its last number
when the reference is a number; otherwise both are compared as case-folded text.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from rlplug_rewards.text import column, completion_text

_NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|[-+]?\.\d+"
)
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{…}`` or ``\fbox{…}``, braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    return None


def extract_answer(text: str, answer_tag: str = "answer") -> str | None:
    """The final answer of a completion, by the rules in the module docstring; None if there is none."""
    tag = re.escape(answer_tag)
    tagged = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
    region = re.sub(rf"</?{tag}>", "", tagged[-1]) if tagged else None
    boxed = last_boxed(region if region is not None else text)
    if boxed is not None:
        return boxed.strip()
    if region is not None:
        return region.strip()
    if parse_number(text) is not None:
        return text.strip()
    numbers = _NUMBER.findall(_FRAC.sub(r"\1/\2", text))
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    text = _TEXT.sub(r"\1", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\$", "{,}", "$", "\\(", "\\)", "\\[", "\\]"):
        text = text.replace(token, "," if token == "{,}" else "")
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".").removesuffix("%")


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact rational (``"1,000"``, ``"0.5"``, ``"1/2"``, ``"\\frac{1}{2}"``), or None."""
    cleaned = _clean(text)
    if _THOUSANDS.fullmatch(cleaned):
        cleaned = cleaned.replace(",", "")
    cleaned = re.sub(r"^\((.*)\)/\((.*)\)$", r"\1/\2", cleaned)
    parts = cleaned.split("/")
    if len(parts) > 2 or not all(parts):
        return None
    try:
        values = [Fraction(part) for part in parts]
        return values[0] if len(values) == 1 else values[0] / values[1]
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, reference: str) -> bool:
    """True when the two answers are equal after normalization (by value when both are numbers)."""
    reference_value = parse_number(reference)
    predicted_value = parse_number(predicted)
    if reference_value is not None and predicted_value is None:
        numbers = _NUMBER.findall(predicted)
        predicted_value = parse_number(numbers[-1]) if numbers else None
    if reference_value is not None and predicted_value is not None:
        return predicted_value == reference_value
    return _clean(predicted).casefold() == _clean(reference).casefold()


def accuracy_math(
    prompts: list[Any], completions: list[Any], *, answer_column: str = "answer", answer_tag: str = "answer",
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the completion's final answer equals the reference answer by value, else 0.0.

    Reads the dataset column ``answer`` (param ``answer_column``). A completion without
    any answer scores 0.0; a row whose reference is missing (None or empty) is None.
    """
    references = column(kwargs, answer_column, "accuracy_math", len(completions), "answer_column")
    rewards: list[float | None] = []
    for completion, reference in zip(completions, references):
        if reference is None or str(reference).strip() == "":
            rewards.append(None)
            continue
        predicted = extract_answer(completion_text(completion), answer_tag)
        rewards.append(1.0 if predicted is not None and answers_match(predicted, str(reference)) else 0.0)
    return rewards
