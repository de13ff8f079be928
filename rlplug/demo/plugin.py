"""The demo's plugin: the reward of the built-in task. It imports no ``datasets``, so
loading the registry stays light."""

from __future__ import annotations

from typing import Any

from rlplug.core.hookspecs import hookimpl


def exact_match(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion, stripped, equals the ``answer`` column; else 0.0.

    Reads the dataset column ``answer``. Conversational completions use the last message's content.
    """
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if text.strip() == target.strip() else 0.0 for text, target in zip(texts, answer, strict=True)]


DISTANCE_FLOOR = -100.0


def arithmetic_distance(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float | None]:
    """``-|value - answer|`` for a completion that is an integer, else ``DISTANCE_FLOOR`` (-100).

    Ranks the built-in task's answers by distance from the true sum (0 for the right one);
    reads the ``answer`` column.
    """
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    scores: list[float | None] = []
    for text, target in zip(texts, answer, strict=True):
        stripped = text.strip()
        is_integer = stripped.isdigit() or (stripped.startswith("-") and stripped[1:].isdigit())
        scores.append(-abs(float(int(stripped) - int(target))) if is_integer else DISTANCE_FLOOR)
    return scores


@hookimpl
def register_reward_functions(register):
    register("arithmetic_exact_match", exact_match)
    register("arithmetic_distance", arithmetic_distance)
