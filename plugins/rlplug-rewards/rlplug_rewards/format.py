"""``format_think``: DeepSeek-R1's format reward (arXiv:2501.12948, section 2.2.2)."""

from __future__ import annotations

import re
from typing import Any

from rlplug_rewards.text import completion_text


def follows_think_format(text: str, think_tag: str = "think", answer_tag: str = "answer") -> bool:
    """True when ``text`` is exactly ``<think>…</think>`` then ``<answer>…</answer>``.

    Whitespace may surround and separate the two blocks; nothing else may. Neither block
    may contain any of the four tags, so nested or repeated tags fail.
    """
    think, answer = re.escape(think_tag), re.escape(answer_tag)
    match = re.fullmatch(rf"\s*<{think}>(.*?)</{think}>\s*<{answer}>(.*?)</{answer}>\s*", text, flags=re.DOTALL)
    if match is None:
        return False
    tags = re.compile(rf"</?(?:{think}|{answer})>")
    return not any(tags.search(part) for part in match.groups())


def format_think(
    prompts: list[Any], completions: list[Any], *, think_tag: str = "think", answer_tag: str = "answer", **kwargs: Any
) -> list[float | None]:
    """1.0 when the completion is exactly ``<think>…</think>`` then ``<answer>…</answer>``, else 0.0.

    Reads no dataset column. The tag names are params (``think_tag``, ``answer_tag``).
    """
    return [1.0 if follows_think_format(completion_text(c), think_tag, answer_tag) else 0.0 for c in completions]
