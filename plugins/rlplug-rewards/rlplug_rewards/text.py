"""Helpers shared by the reward functions: completion text and dataset columns."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, a conversation's last message content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def prompt_text(prompt: Any) -> str:
    """The text of one prompt: a string as is, a conversation's message contents joined by newlines."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(completion_text([message]) for message in prompt)
    raise TypeError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


def column(kwargs: dict[str, Any], name: str, reward: str, size: int, param: str) -> list[Any]:
    """Dataset column ``name`` from the reward kwargs, checked to hold one value per completion."""
    if name not in kwargs:
        available = sorted(k for k, v in kwargs.items() if isinstance(v, list))
        raise KeyError(
            f"{reward} reads the dataset column {name!r}, which the batch does not have "
            f"(columns: {', '.join(available) or 'none'}); add it, or set the reward's `{param}` param"
        )
    values = kwargs[name]
    if len(values) != size:
        raise ValueError(f"{reward}: column {name!r} has {len(values)} values for {size} completions")
    return list(values)
